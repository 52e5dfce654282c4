"""The one middleware of the app. An HTTP call goes through the limits
(`limiting`), then leaves its audit row (`auditing`), then has a refusal or
a crash turned into the contract's JSON error (`errors`), in that order.

The WebSocket upgrade goes straight to its handler, under the JSON errors
alone: its socket keeps the handler's frames alive for as long as it is
open, so each middleware it passed through would be held by every idle
connection (aiohttp chains them as nested coroutines: about 400 bytes a
middleware). Its limits and audit are its own (`gateway.ws`).

Every other call is counted here, outermost, with the status the client
gets: `enf_http_requests_total{route,method,status}` and
`enf_http_request_seconds{route,method}`, where `route` is the matched
route's template (`/v1/sessions/{id}`), `other` when no route matched.
A refusal by the limits, a JSON error and an aiohttp HTTP exception that
passes through (a redirect, a 404 of the router) are counted with their own
status, a crash that escapes with 500; a call cancelled (the server
stopping) is not counted.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from aiohttp import web

from gateway.http.auditing import audit_middleware
from gateway.http.errors import error_for, errors_middleware
from gateway.http.limiting import limits_middleware
from gateway.services import SERVICES

WS_PATH = "/v1/ws"


@web.middleware
async def front_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path == WS_PATH:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except Exception as exc:
            return error_for(request, exc)
    audited = partial(audit_middleware, handler=partial(errors_middleware, handler=handler))
    started = time.perf_counter()
    try:
        response = await limits_middleware(request, audited)
    except web.HTTPException as exc:
        _count(request, exc.status, started)
        raise
    except Exception:
        _count(request, 500, started)
        raise
    _count(request, response.status, started)
    return response


def route_label(request: web.Request) -> str:
    """The matched route's template (bounded: no ids), or `other`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


def _count(request: web.Request, status: int, started: float) -> None:
    services = request.app.get(SERVICES)
    if services is not None:
        services.metrics.observe_http(
            route_label(request), request.method, status, time.perf_counter() - started
        )

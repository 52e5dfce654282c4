"""The one middleware of the app. An HTTP call goes through the limits
(`limiting`), then leaves its audit row (`auditing`), then has a refusal or
a crash turned into the contract's JSON error (`errors`), in that order.

The WebSocket upgrade goes straight to its handler, under the JSON errors
alone: its socket keeps the handler's frames alive for as long as it is
open, so each middleware it passed through would be held by every idle
connection (aiohttp chains them as nested coroutines: about 400 bytes a
middleware). Its limits and audit are its own (`gateway.ws`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from gateway.http.auditing import audit_middleware
from gateway.http.errors import error_for, errors_middleware
from gateway.http.limiting import limits_middleware

WS_PATH = "/v1/ws"


@web.middleware
async def front_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path == WS_PATH:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except Exception as exc:
            return error_for(request, exc)
    audited = partial(audit_middleware, handler=partial(errors_middleware, handler=handler))
    return await limits_middleware(request, audited)

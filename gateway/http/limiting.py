"""The HTTP limits of PROTOCOL §8 (README "Limits"), checked before anything
else (so that a refused call costs no audit row, no handler, no database):

- a call with a valid bearer token: at most ENF_HTTP_USER_RATE_LIMIT per
  second per user (bursts of twice that), then 429 with Retry-After; it is
  never charged to its IP address;
- any other call (no token, or one that fails to verify): charged to its IP
  address, ENF_ANON_RATE_LIMIT per minute, then 429 with Retry-After.

Not limited here: the probes (`/health`, `/ready`, `/metrics`: an
orchestrator and Prometheus poll them), the WebSocket upgrade (its failed
authentications and its connection cap are counted in gateway.ws), and
Twilio's callbacks (authenticated by their signature; a bad one is charged to
the IP address in gateway.http.twilio).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.errors import ProtocolError
from gateway.auth import bearer
from gateway.http.access import IDENTITY, VERIFIED_TOKEN, services_of, verify
from gateway.http.errors import too_many

UNLIMITED = frozenset({"/health", "/ready", "/metrics", "/v1/ws", "/webhooks/twilio/status"})


@web.middleware
async def limits_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path in UNLIMITED:
        return await handler(request)  # type: ignore[no-any-return]
    limits = services_of(request).limits
    token = bearer(request.headers.get("Authorization"))
    if token is not None:
        try:
            ident = verify(request, token)
        except ProtocolError:
            pass  # a failed authentication: charged to the address below
        else:
            request[IDENTITY], request[VERIFIED_TOKEN] = ident, token
            wait = limits.http_user(ident.user_id)
            if wait:
                return too_many("too many requests from this user; slow down", wait)
            return await handler(request)  # type: ignore[no-any-return]
    wait = limits.anonymous(request.remote)
    if wait:
        return too_many("too many unauthenticated requests from this address", wait)
    return await handler(request)  # type: ignore[no-any-return]

"""The audit row every HTTP call on /v1/ leaves (who, what, on which
resource, how it ended), written by a middleware. What the caller sent (path
id, query, headers) is made storable first: a NUL or an unpaired surrogate
never reaches the audit writer."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from config import logging as log_context
from core.errors import HTTP_STATUS
from core.text import storable, storable_json
from gateway.http.access import IDENTITY, services_of
from persistence.audit import AuditRecord

# An HTTP refusal is audited under the contract's code, as WebSocket ones are
# (401 -> unauthorized); a status outside the contract under its number.
CODE_OF_STATUS = {status: code for code, status in HTTP_STATUS.items()}


@web.middleware
async def audit_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every call on /v1/ leaves an audit row (the WebSocket upgrade excepted:
    its requests are audited one by one)."""
    if not request.path.startswith("/v1/") or request.path == "/v1/ws":
        return await handler(request)  # type: ignore[no-any-return]
    correlation_id = storable(request.headers.get("X-Request-Id", "")[:128]) or uuid.uuid4().hex
    log_context.correlation_id.set(correlation_id)
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = correlation_id
        return response
    finally:
        services_of(request).audit.record(_record(request, status, correlation_id))


def _record(request: web.Request, status: int, correlation_id: str) -> AuditRecord:
    route = request.match_info.route.resource
    pattern = storable(route.canonical if route is not None else request.path[:512])
    rid = request.match_info.get("id")
    rid = storable(rid[:128]) if rid is not None else None
    kind = pattern.split("/")[2] if pattern.count("/") >= 2 else None
    resource_type = {"sessions": "session", "envelopes": "envelope", "notaries": "notary"}.get(
        kind or "", kind
    )
    ident = request.get(IDENTITY)
    return AuditRecord(
        event_type="http.request",
        action=f"{request.method} {pattern}",
        outcome="ok" if status < 400 else ("error" if status >= 500 else "refused"),
        correlation_id=correlation_id,
        user_id=_text(ident.user_id, 128) if ident else None,
        ip_address=_text(request.remote, 64),
        user_agent=_text(request.headers.get("User-Agent"), 512),
        resource_type=resource_type if rid else None,
        resource_id=rid,
        error_code=None if status < 400 else CODE_OF_STATUS.get(status, str(status)),
        # Signed link parameters are capabilities: not kept in the audit.
        metadata={
            "status": status,
            "query": storable_json(
                {
                    k: ("[redacted]" if k in ("sig", "token") else v)
                    for k, v in request.query.items()
                }
            ),
        },
    )


def _text(value: str | None, limit: int) -> str | None:
    return None if value is None else storable(value[:limit])

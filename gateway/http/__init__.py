"""The HTTP API (PROTOCOL §6): its routes, one module per subject, and the
middleware every call goes through (limits, audit row, JSON errors: `front`).

Routes are listed in the order they are registered with the router.
"""

from __future__ import annotations

from aiohttp import web

from gateway.http import (
    audit_export,
    deliveries,
    directory,
    legal_record,
    openapi,
    ops_summary,
    probes,
    recordings,
    sessions,
    twilio,
)
from gateway.http.errors import error_response
from gateway.http.front import front_middleware

routes: list[web.AbstractRouteDef] = [
    *probes.routes,
    *directory.routes,
    *sessions.routes,
    *legal_record.routes,
    *audit_export.routes,
    *recordings.routes,
    *twilio.routes,
    *deliveries.routes,
    *ops_summary.routes,
    *openapi.routes,  # GET /openapi.json: the document of every route here
]

__all__ = [
    "error_response",
    "front_middleware",
    "routes",
]

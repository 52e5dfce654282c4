"""`GET /v1/audit`: the audit log for admins, filtered by time, user and
session, streamed as JSON or CSV from a cursor (a large export never sits in
memory)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from core.clock import iso
from core.errors import ProtocolError
from core.text import csv_line
from gateway.http.access import identify, services_of
from gateway.http.inputs import export_format, query_id
from persistence import audit

routes = web.RouteTableDef()


@routes.get("/v1/audit")
async def get_audit(request: web.Request) -> web.StreamResponse:
    """Admins: the audit log, filtered, streamed from a cursor."""
    identify(request, "admin")
    fmt = export_format(request)
    filters = _filters(request)
    services = services_of(request)
    # What was recorded up to this call is in the export.
    await services.audit.flush()
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv" if fmt == "csv" else "application/json"}
    )
    await response.prepare(request)
    if fmt == "csv":
        await response.write(csv_line(audit.EXPORT_COLUMNS).encode())
    else:
        await response.write(b'{"entries":[')
    first = True
    async with contextlib.aclosing(audit.export(services.pool, **filters)) as rows:
        async for row in rows:
            row["at"] = iso(row["at"])
            if fmt == "csv":
                await response.write(_csv_line(row))
            else:
                await response.write((b"" if first else b",") + json.dumps(row).encode())
            first = False
    if fmt == "json":
        await response.write(b"]}")
    await response.write_eof()
    return response


def _filters(request: web.Request) -> dict[str, Any]:
    """`from`, `to` (ISO 8601 times, UTC if no zone), `user_id`, `session_id`
    (identifiers)."""
    filters: dict[str, Any] = {}
    for name, key in (("from", "since"), ("to", "until")):
        if name in request.query:
            filters[key] = _time(name, request.query[name])
    filters["user_id"] = query_id(request, "user_id")
    filters["resource_id"] = query_id(request, "session_id")
    return filters


def _time(name: str, text: str) -> datetime:
    """An ISO 8601 time as UTC; bad_request if it is not one, or if it has no
    UTC equivalent in Python's range (0001-01-01T00:00+01:00)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ProtocolError("bad_request", f"{name} must be an ISO 8601 time") from None


def _csv_line(row: dict[str, Any]) -> bytes:
    """One audit row as CSV: objects as JSON, every cell neutralised (`csv_line`)."""
    return csv_line(json.dumps(v) if isinstance(v, dict) else v for v in row.values()).encode()

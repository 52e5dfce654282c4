"""The outbox for admins: deliveries listed, one delivery, and a dead letter
replayed (back to pending, the worker woken)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from core.clock import iso
from core.errors import ProtocolError
from core.links import withhold_signatures
from core.text import map_strings
from gateway.http.access import identify, services_of
from gateway.http.inputs import path_id, query_id
from persistence import outbox

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _delivery(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}
    for k in ("next_attempt_at", "created_at", "delivered_at"):
        out[k] = iso(out[k]) if out[k] is not None else None
    # Signed links stay withheld here, also in rows written before the
    # outbox withheld them; sealed personal data stays sealed.
    payload = map_strings(dict(out["payload"]), withhold_signatures)
    if "to" in payload:
        payload["to"] = "[sealed]"
    out["payload"] = payload
    if out.get("last_error"):
        out["last_error"] = withhold_signatures(out["last_error"])
    return out


@routes.get("/v1/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    identify(request, "admin")
    status = request.query.get("status")
    if status is not None and status not in ("pending", "delivered", "dead"):
        raise ProtocolError("bad_request", "status must be pending, delivered or dead")
    rows = await outbox.deliveries(
        services_of(request).pool, status, query_id(request, "session_id")
    )
    return web.json_response({"deliveries": [_delivery(r) for r in rows]})


@routes.get("/v1/deliveries/{id}")
async def get_delivery(request: web.Request) -> web.Response:
    identify(request, "admin")
    row = await outbox.delivery(services_of(request).pool, path_id(request, "delivery id"))
    if row is None:
        raise ProtocolError("not_found", "no such delivery")
    return web.json_response(_delivery(row))


@routes.post("/v1/deliveries/{id}/replay")
async def replay_delivery(request: web.Request) -> web.Response:
    ident = identify(request, "admin")
    services = services_of(request)
    delivery_id = path_id(request, "delivery id")
    row = await outbox.replay(services.pool, delivery_id)
    if row is None:
        exists = await outbox.status_of(services.pool, delivery_id)
        if exists is None:
            raise ProtocolError("not_found", "no such delivery")
        raise ProtocolError("conflict", f"only dead letters are replayed (this one is {exists})")
    logger.info("delivery %s replayed by %s", delivery_id, ident.user_id)
    services.deliveries.wake()
    fresh = await outbox.delivery(services.pool, delivery_id)
    return web.json_response(_delivery(fresh))

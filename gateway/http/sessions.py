"""Sessions over HTTP: the admins' listing, one session's snapshot (as its
actor shows it to the caller), and its journal (participants and admins)."""

from __future__ import annotations

from aiohttp import web

from actors import lifecycle as L
from core.errors import ProtocolError
from core.ids import session_address
from core.messages import Caller, Message
from gateway.http.access import identify, services_of, visible_session
from gateway.http.inputs import session_id
from persistence import sessions

routes = web.RouteTableDef()


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    identify(request, "admin")
    state = request.query.get("state")
    if state is not None and state not in L.STATES:
        raise ProtocolError("bad_request", f"state must be one of {', '.join(L.STATES)}")
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "200"))))
    except ValueError:
        raise ProtocolError("bad_request", "limit must be an integer") from None
    snapshots = await sessions.latest_snapshots(services_of(request).pool, state, limit)
    return web.json_response({"sessions": snapshots})


@routes.get("/v1/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    ident = identify(request)
    sid = session_id(request)
    caller = Caller(ident.user_id, ident.role, kyc_verified=ident.kyc_verified, claims=ident.claims)
    snap = await services_of(request).host.ask(
        session_address(sid), Message("snapshot", {}, caller)
    )
    return web.json_response(snap)


@routes.get("/v1/sessions/{id}/journal")
async def get_journal(request: web.Request) -> web.Response:
    ident = identify(request)
    sid = session_id(request)
    await visible_session(request, ident, sid)
    events = await services_of(request).journal.read(session_address(sid))
    return web.json_response({"session_id": sid, "events": [e.with_hashes() for e in events]})

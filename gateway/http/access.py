"""Who is calling and what they may see: the caller's identity (bearer token,
roles), the services a handler reaches, and the one rule for who may see a
session (and what hangs off it: journal, recording, envelope)."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from core.errors import ProtocolError
from gateway.auth import Identity, bearer, verify_token
from gateway.services import SERVICES, Services
from persistence import sessions

# The verified caller, kept on the request for the audit row.
IDENTITY = web.RequestKey("identity", Identity)
# The bearer token IDENTITY was verified from (by the limits middleware).
VERIFIED_TOKEN = web.RequestKey("verified_token", str)


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def identify(request: web.Request, *roles: str) -> Identity:
    """The caller of a bearer token; with `roles`, one of those roles only."""
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise ProtocolError("unauthorized", "send Authorization: Bearer <token>")
    if request.get(VERIFIED_TOKEN) == token:
        ident = request[IDENTITY]  # verified on the way in (gateway.http.limiting)
    else:
        ident = verify(request, token)
    request[IDENTITY] = ident
    if roles and ident.role not in roles:
        raise ProtocolError("forbidden", f"not allowed for role {ident.role}")
    return ident


def verify(request: web.Request, token: str) -> Identity:
    """The identity `token` proves (else ProtocolError `unauthorized`)."""
    services = services_of(request)
    return verify_token(token, services.jwt_secret, services.settings.max_token_ttl_s)


def may_see(ident: Identity, row: Any) -> bool:
    """An admin, or the session's customer or notary (a `sessions` row with
    customer_id and enp_id), each in their own role."""
    if row is None:
        return False
    if ident.role == "admin":
        return True
    own = row["customer_id"] if ident.role == "customer" else row["enp_id"]
    return ident.role in ("customer", "enp") and ident.user_id == own


def visible(ident: Identity, row: asyncpg.Record | None, what: str) -> asyncpg.Record:
    """`row` if `ident` may see it (`may_see`); else not_found, as if there
    were no such `what`."""
    if row is None or not may_see(ident, row):
        raise ProtocolError("not_found", f"no such {what}")
    return row


async def visible_session(request: web.Request, ident: Identity, session_id: str) -> asyncpg.Record:
    """The session's row (customer_id, enp_id, snapshot), if `ident` may see it."""
    return visible(ident, await sessions.parties(services_of(request).pool, session_id), "session")

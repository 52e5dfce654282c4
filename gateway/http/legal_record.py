"""The legal record over HTTP: the signing keys, TRUTH envelopes (for the
session's participants, for holders of a shared link, and their
verification), and a notary's notarial book by month (JSON or CSV)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from core.errors import ProtocolError
from core.links import check_path
from gateway.http.access import identify, services_of, visible
from gateway.http.inputs import export_format, json_body, path_id, user_id
from gateway.services import Services
from persistence import book, legal_record
from persistence.keys import PiiCorrupt, PiiKeyMismatch, verify_signed

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.get("/v1/keys")
async def get_keys(request: web.Request) -> web.Response:
    return web.json_response({"keys": [services_of(request).keys.signer.public.describe()]})


@routes.get("/v1/envelopes/{id}")
async def get_envelope(request: web.Request) -> web.Response:
    ident = identify(request)
    envelope_id = path_id(request, "envelope id")
    services = services_of(request)
    row = visible(
        ident,
        await legal_record.sealed_envelope_and_parties(services.pool, envelope_id),
        "envelope",
    )
    return web.json_response(_opened(services, row["sealed"], envelope_id))


@routes.post("/v1/envelopes/verify")
async def verify_envelope(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict) or not {"envelope", "signature", "key_id"} <= body.keys():
        raise ProtocolError("bad_request", "post a signed envelope: {envelope, signature, key_id}")
    if not (
        isinstance(body["envelope"], dict)
        and isinstance(body["signature"], str)
        and isinstance(body["key_id"], str)
    ):
        raise ProtocolError(
            "bad_request",
            "a signed envelope is {envelope: object, signature: string, key_id: string}",
        )
    valid, reason = verify_signed(body, [services_of(request).keys.signer.public])
    return web.json_response({"valid": True} if valid else {"valid": False, "reason": reason})


@routes.get("/v1/envelopes/{id}/shared")
async def get_shared_envelope(request: web.Request) -> web.Response:
    """The signed envelope for whoever holds the link sent at distribution."""
    envelope_id = path_id(request, "envelope id")
    services = services_of(request)
    why = check_path(
        services.keys.pii.link_secret,
        f"/v1/envelopes/{envelope_id}/shared",
        request.query.get("expires", ""),
        request.query.get("sig", ""),
    )
    if why is not None:
        raise ProtocolError("forbidden", f"envelope link refused: {why}")
    sealed = await legal_record.sealed_envelope(services.pool, envelope_id)
    if sealed is None:
        raise ProtocolError("not_found", "no such envelope")
    return web.json_response(_opened(services, sealed, envelope_id))


def _month(month: str) -> tuple[datetime, datetime]:
    """`YYYY-MM` -> its first instant and the next month's (UTC); bad_request
    for anything else, a year without a next month (9999-12) included."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
    except (ValueError, OverflowError):
        raise ProtocolError("bad_request", "month must be YYYY-MM (years 1-9998)") from None
    return start, end


def _opened(services: Services, sealed: str, envelope_id: str) -> Any:
    """The signed envelope out of its seal; unavailable if the PII key cannot open it."""
    try:
        return services.keys.pii.open(sealed, envelope_id)
    except (PiiKeyMismatch, PiiCorrupt) as exc:
        logger.error("envelope %s cannot be opened: %s", envelope_id, exc)
        raise ProtocolError("unavailable", f"the envelope cannot be opened: {exc}") from None


@routes.get("/v1/notaries/{id}/book")
async def get_book(request: web.Request) -> web.StreamResponse:
    ident = identify(request, "enp", "admin")
    notary_id = user_id(request)
    if ident.role == "enp" and ident.user_id != notary_id:
        raise ProtocolError("forbidden", "you may only export your own notarial book")
    month = request.query.get("month") or datetime.now(UTC).strftime("%Y-%m")
    start, end = _month(month)
    fmt = export_format(request)
    services = services_of(request)
    rows = await legal_record.book_entries(services.pool, notary_id, start, end)
    try:
        entries = [book.export_entry(r, services.keys.pii) for r in rows]
    except (PiiKeyMismatch, PiiCorrupt) as exc:
        logger.error("notarial book of %s cannot be opened: %s", notary_id, exc)
        raise ProtocolError("unavailable", f"the book cannot be opened: {exc}") from None
    if fmt == "csv":
        return web.Response(
            text=book.to_csv(entries, notary_id, month),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="book-{notary_id}-{month}.csv"'},
        )
    body: dict[str, Any] = {"notary_id": notary_id, "month": month, "entries": entries}
    if not entries:
        body["statement"] = book.no_entries_statement(notary_id, month)
    return web.json_response(body)

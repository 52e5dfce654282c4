"""HTTP endpoints of PROTOCOL §6 that this server has so far."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, unquote

from aiohttp import web
from pydantic import Field, StringConstraints, ValidationError, field_validator

from actors import lifecycle as L
from config import logging as log_context
from core.clock import iso
from core.errors import HTTP_STATUS, ErrorCode, ProtocolError
from core.ids import notary_address, session_address
from core.links import LINK_TTL_S, check_path, sign_path
from core.messages import Caller, Message
from gateway.auth import Identity, bearer, verify_token
from gateway.requests import LatLng, Model, Text
from gateway.services import SERVICES, Services
from media.storage import FileStorage
from persistence import book, outbox
from persistence.audit import COLUMNS, AuditRecord
from persistence.keys import PiiCorrupt, PiiKeyMismatch, mask, verify_signed

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()
IDENTITY = web.RequestKey("identity", Identity)


def error_response(code: ErrorCode, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=HTTP_STATUS[code]
    )


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _identity(request: web.Request, *roles: str) -> Identity:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise ProtocolError("unauthorized", "send Authorization: Bearer <token>")
    ident = verify_token(token, _services(request).jwt_secret)
    request[IDENTITY] = ident
    if roles and ident.role not in roles:
        raise ProtocolError("forbidden", f"not allowed for role {ident.role}")
    return ident


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json(loads=lambda s: json.loads(s, parse_constant=_bad_constant))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad_request", "the body must be JSON") from None


def _bad_constant(name: str) -> Any:
    raise ValueError(name)


def _validate(model: type[Model], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ProtocolError("bad_request", f"{where}: {first['msg']}") from None


def _session_id(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise ProtocolError("not_found", "no such session") from None


def _may_see(ident: Identity, row: Any) -> bool:
    """An admin, or the session's customer or notary (a `sessions` row with
    customer_id and enp_id), each in their own role."""
    if row is None:
        return False
    if ident.role == "admin":
        return True
    own = row["customer_id"] if ident.role == "customer" else row["enp_id"]
    return ident.role in ("customer", "enp") and ident.user_id == own


@web.middleware
async def audit_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every call on /v1/ leaves an audit row (the WebSocket upgrade excepted:
    its requests are audited one by one)."""
    if not request.path.startswith("/v1/") or request.path == "/v1/ws":
        return await handler(request)  # type: ignore[no-any-return]
    correlation_id = request.headers.get("X-Request-Id", "")[:128] or uuid.uuid4().hex
    log_context.correlation_id.set(correlation_id)
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = correlation_id
        return response
    finally:
        route = request.match_info.route.resource
        pattern = route.canonical if route is not None else request.path
        rid = request.match_info.get("id")
        kind = pattern.split("/")[2] if pattern.count("/") >= 2 else None
        resource_type = {"sessions": "session", "envelopes": "envelope", "notaries": "notary"}.get(
            kind or "", kind
        )
        ident = request.get(IDENTITY)
        services = _services(request)
        services.audit.record(
            AuditRecord(
                event_type="http.request",
                action=f"{request.method} {pattern}",
                outcome="ok" if status < 400 else ("error" if status >= 500 else "refused"),
                correlation_id=correlation_id,
                user_id=ident.user_id if ident else None,
                ip_address=request.remote,
                user_agent=request.headers.get("User-Agent"),
                resource_type=resource_type if rid else None,
                resource_id=rid,
                error_code=None if status < 400 else str(status),
                # Signed link parameters are capabilities: not kept in the audit.
                metadata={
                    "status": status,
                    "query": {
                        k: ("[redacted]" if k in ("sig", "token") else v)
                        for k, v in request.query.items()
                    },
                },
            )
        )


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ProtocolError as exc:
        logger.info("%s %s refused: %s %s", request.method, request.path, exc.code, exc.message)
        return error_response(exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            codes: dict[int, ErrorCode] = {404: "not_found", 413: "too_large"}
            code: ErrorCode = codes.get(exc.status, "bad_request")
            return web.json_response(
                {"error": {"code": code, "message": exc.reason}}, status=exc.status
            )
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return error_response("internal", "internal error")


# -- probes --------------------------------------------------------------------


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    services = _services(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.pool.fetchval("SELECT 1"), 2.0)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if services.settings.cluster == "ray":
        # What needs Redis (events, presence) says so; requests still work.
        checks["redis"] = getattr(services.bus, "status", "ok")
        checks["ray"] = await services.host.health()
    elif services.settings.redis_url:
        checks["redis"] = await _redis_check(services.settings.redis_url)
    ok = all(v == "ok" for v in checks.values()) and not services.shutting_down
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    services = _services(request)
    await services.metrics.refresh(services)
    return web.Response(
        body=services.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _redis_check(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        await asyncio.wait_for(client.ping(), 1.5)
        return "ok"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    finally:
        await client.aclose()


# -- profiles ----------------------------------------------------------------------


class NotaryProfile(Model):
    name: Text | None = None
    license_number: Text | None = None
    commission_expires: Text | None = None
    rating: Annotated[float, Field(ge=0, le=5)] | None = None
    tariff: Annotated[float, Field(ge=0)] | None = None
    specializations: Annotated[list[Text], Field(max_length=100)] = []
    location: LatLng | None = None
    avg_response_time_s: Annotated[float, Field(ge=0)] | None = None
    # Opt-in: offers made while the notary is not connected go out by SMS.
    notify_sms: Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{7,14}$")] | None = None

    @field_validator("commission_expires")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            date.fromisoformat(v[:10])
        return v


class Favorites(Model):
    notary_ids: Annotated[list[Text], Field(max_length=500)]


def _user_id(request: web.Request) -> str:
    uid = request.match_info["id"]
    if not 0 < len(uid) <= 128 or ":" in uid:
        raise ProtocolError("bad_request", "invalid id")
    return uid


@routes.put("/v1/notaries/{id}")
async def put_notary(request: web.Request) -> web.Response:
    _identity(request, "admin")
    notary_id = _user_id(request)
    profile = _validate(NotaryProfile, await _json_body(request)).model_dump(exclude_none=True)
    services = _services(request)
    shown = dict(profile)
    if "notify_sms" in profile:  # a phone number: sealed at rest
        shown["notify_sms"] = mask(profile["notify_sms"])
        profile["notify_sms"] = services.keys.pii.seal(
            profile["notify_sms"], notary_address(notary_id)
        )
    await services.pool.execute(
        "INSERT INTO notaries (notary_id, profile) VALUES ($1, $2) ON CONFLICT (notary_id)"
        " DO UPDATE SET profile = $2, updated_at = now()",
        notary_id,
        profile,
    )
    services.host.tell(notary_address(notary_id), Message("profile_updated"))
    logger.info("notary profile %s updated", notary_id)
    return web.json_response({"notary_id": notary_id, "profile": shown})


@routes.put("/v1/customers/{id}/favorites")
async def put_favorites(request: web.Request) -> web.Response:
    ident = _identity(request, "admin", "customer")
    customer_id = _user_id(request)
    if ident.role == "customer" and ident.user_id != customer_id:
        raise ProtocolError("forbidden", "you may only change your own favorites")
    body = _validate(Favorites, await _json_body(request))
    ids = list(dict.fromkeys(body.notary_ids))
    await _services(request).pool.execute(
        "INSERT INTO favorites (customer_id, notary_ids) VALUES ($1, $2) ON CONFLICT"
        " (customer_id) DO UPDATE SET notary_ids = $2, updated_at = now()",
        customer_id,
        ids,
    )
    return web.json_response({"customer_id": customer_id, "notary_ids": ids})


# -- sessions ------------------------------------------------------------------------


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    _identity(request, "admin")
    state = request.query.get("state")
    if state is not None and state not in L.STATES:
        raise ProtocolError("bad_request", f"state must be one of {', '.join(L.STATES)}")
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "200"))))
    except ValueError:
        raise ProtocolError("bad_request", "limit must be an integer") from None
    pool = _services(request).pool
    if state is None:
        rows = await pool.fetch(
            "SELECT snapshot FROM sessions ORDER BY created_at DESC LIMIT $1", limit
        )
    else:
        rows = await pool.fetch(
            "SELECT snapshot FROM sessions WHERE state = $1 ORDER BY created_at DESC LIMIT $2",
            state,
            limit,
        )
    return web.json_response({"sessions": [r["snapshot"] for r in rows]})


@routes.get("/v1/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    ident = _identity(request)
    session_id = _session_id(request)
    caller = Caller(ident.user_id, ident.role, kyc_verified=ident.kyc_verified, claims=ident.claims)
    snap = await _services(request).host.ask(
        session_address(session_id), Message("snapshot", {}, caller)
    )
    return web.json_response(snap)


@routes.get("/v1/sessions/{id}/journal")
async def get_journal(request: web.Request) -> web.Response:
    ident = _identity(request)
    session_id = _session_id(request)
    services = _services(request)
    row = await services.pool.fetchrow(
        "SELECT customer_id, enp_id FROM sessions WHERE session_id = $1", session_id
    )
    if not _may_see(ident, row):
        raise ProtocolError("not_found", "no such session")
    events = await services.journal.read(session_address(session_id))
    return web.json_response(
        {"session_id": session_id, "events": [e.with_hashes() for e in events]}
    )


# -- the legal record ------------------------------------------------------------------


@routes.get("/v1/keys")
async def get_keys(request: web.Request) -> web.Response:
    return web.json_response({"keys": [_services(request).keys.signer.public.describe()]})


@routes.get("/v1/envelopes/{id}")
async def get_envelope(request: web.Request) -> web.Response:
    ident = _identity(request)
    envelope_id = request.match_info["id"]
    services = _services(request)
    row = await services.pool.fetchrow(
        "SELECT e.sealed, s.customer_id, s.enp_id FROM envelopes e"
        " JOIN sessions s ON s.session_id = e.session_id WHERE e.envelope_id = $1",
        envelope_id,
    )
    if not _may_see(ident, row):
        raise ProtocolError("not_found", "no such envelope")
    try:
        signed = services.keys.pii.open(row["sealed"], envelope_id)
    except (PiiKeyMismatch, PiiCorrupt) as exc:
        logger.error("envelope %s cannot be opened: %s", envelope_id, exc)
        raise ProtocolError("unavailable", f"the envelope cannot be opened: {exc}") from None
    return web.json_response(signed)


@routes.post("/v1/envelopes/verify")
async def verify_envelope(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict) or not {"envelope", "signature", "key_id"} <= body.keys():
        raise ProtocolError("bad_request", "post a signed envelope: {envelope, signature, key_id}")
    valid, reason = verify_signed(body, [_services(request).keys.signer.public])
    return web.json_response({"valid": True} if valid else {"valid": False, "reason": reason})


@routes.get("/v1/notaries/{id}/book")
async def get_book(request: web.Request) -> web.StreamResponse:
    ident = _identity(request, "enp", "admin")
    notary_id = _user_id(request)
    if ident.role == "enp" and ident.user_id != notary_id:
        raise ProtocolError("forbidden", "you may only export your own notarial book")
    month = request.query.get("month") or datetime.now(UTC).strftime("%Y-%m")
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ProtocolError("bad_request", "month must be YYYY-MM") from None
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ProtocolError("bad_request", "format must be json or csv")
    end = (start + timedelta(days=32)).replace(day=1)
    services = _services(request)
    rows = await services.pool.fetch(
        "SELECT entry_no, session_id, complete, act_at, entry FROM notarial_book"
        " WHERE notary_id = $1 AND act_at >= $2 AND act_at < $3 ORDER BY entry_no",
        notary_id,
        start,
        end,
    )
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


@routes.get("/v1/audit")
async def get_audit(request: web.Request) -> web.StreamResponse:
    """Admins: the audit log, filtered, streamed from a cursor (a large export
    never sits in memory)."""
    _identity(request, "admin")
    q = request.query
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ProtocolError("bad_request", "format must be json or csv")
    where: list[str] = []
    args: list[Any] = []
    for name, column, op in (("from", "at", ">="), ("to", "at", "<")):
        if name in q:
            try:
                value = datetime.fromisoformat(q[name].replace("Z", "+00:00"))
            except ValueError:
                raise ProtocolError("bad_request", f"{name} must be an ISO 8601 time") from None
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            args.append(value)
            where.append(f"{column} {op} ${len(args)}")
    for name, column in (("user_id", "user_id"), ("session_id", "resource_id")):
        if name in q:
            args.append(q[name])
            where.append(f"{column} = ${len(args)}")
    sql = "SELECT id, " + ", ".join(COLUMNS) + " FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id"
    services = _services(request)
    # What was recorded up to this call is in the export.
    await services.audit.flush()
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv" if fmt == "csv" else "application/json"}
    )
    await response.prepare(request)
    columns = ("id", *COLUMNS)
    if fmt == "csv":
        await response.write((",".join(columns) + "\r\n").encode())
    else:
        await response.write(b'{"entries":[')
    first = True
    async with services.pool.acquire() as conn, conn.transaction():
        async for r in conn.cursor(sql, *args, prefetch=500):
            row = {c: r[c] for c in columns}
            row["at"] = iso(row["at"])
            if fmt == "csv":
                out = io.StringIO()
                csv.writer(out).writerow(
                    [
                        json.dumps(v) if isinstance(v, dict) else ("" if v is None else v)
                        for v in row.values()
                    ]
                )
                await response.write(out.getvalue().encode())
            else:
                await response.write((b"" if first else b",") + json.dumps(row).encode())
            first = False
    if fmt == "json":
        await response.write(b"]}")
    await response.write_eof()
    return response


# -- recordings --------------------------------------------------------------------------


@routes.get("/v1/sessions/{id}/recording")
async def get_recording_link(request: web.Request) -> web.Response:
    """A short-lived link to the session's recording (participants, admins)."""
    ident = _identity(request)
    session_id = _session_id(request)
    services = _services(request)
    row = await services.pool.fetchrow(
        "SELECT customer_id, enp_id, snapshot FROM sessions WHERE session_id = $1", session_id
    )
    if not _may_see(ident, row):
        raise ProtocolError("not_found", "no such session")
    recording = (row["snapshot"] or {}).get("recording")
    if not recording:
        raise ProtocolError("not_found", "this session has no finished recording")
    url = recording["url"]
    link = services.storage.link(url, LINK_TTL_S)
    if link is not None:
        expires = int(time.time()) + LINK_TTL_S
    else:
        name = unquote(url.rsplit("/", 1)[-1])  # the file's name, as the route decodes it
        path, expires = sign_path(services.jwt_secret, f"/v1/recordings/{session_id}/{quote(name)}")
        link = str(request.url.origin()) + path
    return web.json_response({"url": link, "expires_at": iso(datetime.fromtimestamp(expires, UTC))})


@routes.get("/v1/recordings/{id}/{name}")
async def get_recording_file(request: web.Request) -> web.StreamResponse:
    """A `file://` recording, for whoever holds an unexpired signed link."""
    session_id = _session_id(request)
    name = request.match_info["name"]
    path = f"/v1/recordings/{session_id}/{quote(name)}"
    why = check_path(
        _services(request).jwt_secret,
        path,
        request.query.get("expires", ""),
        request.query.get("sig", ""),
    )
    if why is not None:
        raise ProtocolError("forbidden", f"recording link refused: {why}")
    storage = _services(request).storage
    if not isinstance(storage, FileStorage) or "/" in name or name.startswith("."):
        raise ProtocolError("not_found", "no such recording")
    file = storage.path_of((storage.root / session_id / name).resolve().as_uri())
    if file is None:
        raise ProtocolError("not_found", "no such recording")
    return web.FileResponse(file, headers={"Content-Type": "video/x-matroska"})


# -- Twilio --------------------------------------------------------------------------------


@routes.post("/webhooks/twilio/status")
async def twilio_status(request: web.Request) -> web.Response:
    """Room and recording status callbacks, signed by Twilio."""
    services = _services(request)
    video = services.video
    if video is None:
        raise ProtocolError("not_found", "ENF_VIDEO_PROVIDER is not twilio")
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    base = services.settings.public_url
    url = (base.rstrip("/") + request.path_qs) if base else str(request.url)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not video.valid(url, params, signature):
        logger.warning("twilio callback refused: bad signature (%s)", params.get("CallbackSid"))
        raise ProtocolError("forbidden", "bad X-Twilio-Signature")
    logger.info("twilio %s for room %s", params.get("StatusCallbackEvent"), params.get("RoomName"))
    video.on_callback(params)
    return web.Response(status=204)


@routes.get("/v1/envelopes/{id}/shared")
async def get_shared_envelope(request: web.Request) -> web.Response:
    """The signed envelope for whoever holds the link sent at distribution."""
    envelope_id = request.match_info["id"]
    services = _services(request)
    why = check_path(
        services.keys.pii.link_secret,
        f"/v1/envelopes/{envelope_id}/shared",
        request.query.get("expires", ""),
        request.query.get("sig", ""),
    )
    if why is not None:
        raise ProtocolError("forbidden", f"envelope link refused: {why}")
    sealed = await services.pool.fetchval(
        "SELECT sealed FROM envelopes WHERE envelope_id = $1", envelope_id
    )
    if sealed is None:
        raise ProtocolError("not_found", "no such envelope")
    try:
        return web.json_response(services.keys.pii.open(sealed, envelope_id))
    except (PiiKeyMismatch, PiiCorrupt) as exc:
        raise ProtocolError("unavailable", f"the envelope cannot be opened: {exc}") from None


# -- deliveries (the outbox) -------------------------------------------------------------

_DELIVERY_COLUMNS = (
    "id, session_id, destination, type, payload, recipient, status, attempts,"
    " next_attempt_at, last_error, created_at, delivered_at"
)


def _delivery(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}
    for k in ("next_attempt_at", "created_at", "delivered_at"):
        out[k] = iso(out[k]) if out[k] is not None else None
    payload = dict(out["payload"])
    if "to" in payload:  # sealed personal data stays sealed here
        payload["to"] = "[sealed]"
    out["payload"] = payload
    return out


@routes.get("/v1/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    _identity(request, "admin")
    status = request.query.get("status")
    if status is not None and status not in ("pending", "delivered", "dead"):
        raise ProtocolError("bad_request", "status must be pending, delivered or dead")
    where, args = [], []
    if status:
        args.append(status)
        where.append(f"status = ${len(args)}")
    if "session_id" in request.query:
        args.append(request.query["session_id"])
        where.append(f"session_id = ${len(args)}")
    sql = f"SELECT {_DELIVERY_COLUMNS} FROM outbox"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY n DESC LIMIT 500"
    rows = await _services(request).pool.fetch(sql, *args)
    return web.json_response({"deliveries": [_delivery(r) for r in rows]})


@routes.get("/v1/deliveries/{id}")
async def get_delivery(request: web.Request) -> web.Response:
    _identity(request, "admin")
    row = await _services(request).pool.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE id = $1", request.match_info["id"]
    )
    if row is None:
        raise ProtocolError("not_found", "no such delivery")
    return web.json_response(_delivery(row))


@routes.post("/v1/deliveries/{id}/replay")
async def replay_delivery(request: web.Request) -> web.Response:
    ident = _identity(request, "admin")
    services = _services(request)
    delivery_id = request.match_info["id"]
    row = await outbox.replay(services.pool, delivery_id)
    if row is None:
        exists = await services.pool.fetchval(
            "SELECT status FROM outbox WHERE id = $1", delivery_id
        )
        if exists is None:
            raise ProtocolError("not_found", "no such delivery")
        raise ProtocolError("conflict", f"only dead letters are replayed (this one is {exists})")
    logger.info("delivery %s replayed by %s", delivery_id, ident.user_id)
    services.deliveries.wake()
    fresh = await services.pool.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE id = $1", delivery_id
    )
    return web.json_response(_delivery(fresh))

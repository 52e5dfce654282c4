"""`GET /v1/ws`: authentication (header or `hello`), codec choice, the read loop."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from core.errors import ProtocolError
from gateway import protocol as P
from gateway.auth import Identity, bearer, verify_token
from gateway.codec import Codec, DecodeError, codec_for
from gateway.connection import Connection
from gateway.http.errors import error_response, too_many
from gateway.services import SERVICES, Services
from gateway.ws_audit import token_refused

logger = logging.getLogger(__name__)


def _too_big(msg_data: str | bytes) -> bool:
    if isinstance(msg_data, bytes):
        return len(msg_data) > P.MAX_FRAME
    return len(msg_data) > P.MAX_FRAME // 4 and len(msg_data.encode()) > P.MAX_FRAME


TOO_MANY_CONNECTIONS = "too many open connections for this user"
TOO_MANY_FAILURES = "too many failed authentications from this address"


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """Authenticate (a header token: before the upgrade), take one of the
    user's connection slots (ENF_MAX_CONNECTIONS_PER_USER), serve, give it back.
    The read loop is here, in the one frame an open socket keeps alive."""
    services: Services = request.app[SERVICES]
    if services.shutting_down:
        return error_response("unavailable", "server is shutting down")
    ident = None
    if bearer(request.headers.get("Authorization")) is not None:
        # (The token itself is not kept in this frame, which lives as long as the socket.)
        admitted = _admit_header(request, services)
        if not isinstance(admitted, Identity):
            return admitted
        ident = admitted  # its slot is taken
    claimed = ident
    try:
        ws = web.WebSocketResponse(
            protocols=(P.SUBPROTOCOL_JSON, P.SUBPROTOCOL_MSGPACK),
            # The pings are gateway.heartbeat's (one task for every socket);
            # the read loop below answers the client's and notes its pongs.
            autoping=False,
            # aiohttp refuses a frame of exactly max_msg_size; the contract allows 65,536.
            max_msg_size=P.MAX_FRAME + 1,
        )
        await ws.prepare(request)
        codec = codec_for(ws.ws_protocol)
        if ident is None:
            ident = claimed = await _authenticated(ws, codec, services, request)
            if ident is None:
                return ws
        conn = _open(request, services, ws, codec, ident)
        try:
            async for msg in ws:
                conn.heard = True
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if not await _read(conn, msg.type, msg.data):
                        break
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    conn.log.info("socket error: %s", ws.exception())
                    break
        finally:
            await _closed(services, conn, ident)
        return ws
    finally:
        if claimed is not None:
            services.limits.release_connection(claimed.user_id)


def _admit_header(request: web.Request, services: Services) -> Identity | web.StreamResponse:
    """The header token's identity, its connection slot taken; or the refusal."""
    limits = services.limits
    token = bearer(request.headers.get("Authorization")) or ""
    try:
        ident = verify_token(token, services.jwt_secret, services.settings.max_token_ttl_s)
    except ProtocolError as exc:
        logger.info("refused header token from %s: %s", request.remote, exc.message)
        wait = limits.anonymous(request.remote)
        if wait:
            return too_many(TOO_MANY_FAILURES, wait)
        _audit_refusal(services, request, "GET /v1/ws", exc.message)
        return error_response("unauthorized", exc.message)
    if not limits.claim_connection(ident.user_id):
        logger.info("refused a connection of %s: %s", ident.user_id, TOO_MANY_CONNECTIONS)
        return too_many(TOO_MANY_CONNECTIONS)
    return ident


async def _authenticated(
    ws: web.WebSocketResponse, codec: Codec, services: Services, request: web.Request
) -> Identity | None:
    """Authenticate by `hello` and take a slot (None: the socket is refused)."""
    ident = await _hello(ws, codec, services, request)
    if ident is None:
        return None
    if not services.limits.claim_connection(ident.user_id):
        logger.info("refused a connection of %s: %s", ident.user_id, TOO_MANY_CONNECTIONS)
        await ws.close(code=P.CLOSE_FLOOD, message=TOO_MANY_CONNECTIONS.encode())
        return None
    return ident


async def _read(conn: Connection, kind: WSMsgType, data: str | bytes) -> bool:
    """Take one data frame; False once the socket is closed for it."""
    refusal = _refusal(kind, data, conn.codec)
    if refusal is not None:
        conn.log.info("closing with %d: %s", *refusal)
        await conn.ws.close(code=refusal[0], message=refusal[1].encode())
        return False
    conn.on_frame(data)
    if conn.closing:
        await conn.drain(0.5)
    return True


def _refusal(kind: WSMsgType, data: str | bytes, codec: Codec) -> tuple[int, str] | None:
    """The close (code, reason) a data frame earns before it is read, if any."""
    if (kind == WSMsgType.BINARY) != codec.binary:
        return P.CLOSE_PROTOCOL, f"{codec.name} uses {'binary' if codec.binary else 'text'} frames"
    if _too_big(data):
        return P.CLOSE_TOO_BIG, "frame over 65536 bytes"
    return None


def _open(
    request: web.Request,
    services: Services,
    ws: web.WebSocketResponse,
    codec: Codec,
    ident: Identity,
) -> Connection:
    """The connection of an upgraded, authenticated socket, welcomed."""
    conn = Connection(
        ws,
        ident,
        codec,
        services,
        request.remote,
        request.headers.get("User-Agent"),
        request.transport,
    )
    services.connections.add(conn)
    services.metrics.connections.labels(ident.role).inc()
    conn.start()
    conn.log.info("connected as %s (%s, %s)", ident.user_id, ident.role, codec.name)
    conn.send(
        {
            "type": "welcome",
            "data": {
                "user_id": ident.user_id,
                "role": ident.role,
                "connection_id": conn.id,
                "heartbeat_s": services.settings.heartbeat_s,
            },
        }
    )
    return conn


async def _closed(services: Services, conn: Connection, ident: Identity) -> None:
    services.connections.discard(conn)
    services.metrics.connections.labels(ident.role).dec()
    if conn.closing and _expired(ident):  # closed by the server at `exp` (4401)
        conn.audit.token_expired()
    await conn.finish()
    conn.log.info("disconnected (close code %s)", conn.ws.close_code)


async def _hello(
    ws: web.WebSocketResponse, codec: Codec, services: Services, request: web.Request
) -> Identity | None:
    secret, max_ttl_s = services.jwt_secret, services.settings.max_token_ttl_s
    try:
        async with asyncio.timeout(P.HELLO_TIMEOUT_S):
            msg = await ws.receive()
            while msg.type in (WSMsgType.PING, WSMsgType.PONG):  # not answered by aiohttp
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                msg = await ws.receive()
    except TimeoutError:
        await ws.close(code=P.CLOSE_NO_HELLO, message=b"no hello within 5 s")
        return None
    except asyncio.CancelledError:
        raise
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    if (msg.type == WSMsgType.BINARY) != codec.binary:
        await ws.close(code=P.CLOSE_PROTOCOL, message=b"wrong frame type for the subprotocol")
        return None
    try:
        hello = codec.decode(msg.data)
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise ProtocolError("unauthorized", "the first frame must be hello")
        data = hello.get("data")
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise ProtocolError("unauthorized", "hello needs data.token")
        return verify_token(token, secret, max_ttl_s)
    except (ProtocolError, DecodeError) as exc:
        text = exc.message if isinstance(exc, ProtocolError) else str(exc)
        logger.info("refused hello from %s: %s", request.remote, text)
        if services.limits.anonymous(request.remote):  # a failed authentication, per IP
            await ws.close(code=P.CLOSE_FLOOD, message=TOO_MANY_FAILURES.encode())
            return None
        _audit_refusal(services, request, "hello", text)
        # A close reason is at most 123 bytes of UTF-8: ASCII, cut to 120.
        await ws.close(code=P.CLOSE_BAD_TOKEN, message=text.encode("ascii", "replace")[:120])
        return None


def _audit_refusal(services: Services, request: web.Request, action: str, reason: str) -> None:
    """Audit a refused token (answered: not one the per-address limit cut off)."""
    token_refused(services, request.remote, request.headers.get("User-Agent"), action, reason)


def _expired(ident: Identity) -> bool:
    return ident.expires_at is not None and ident.expires_at <= time.time()

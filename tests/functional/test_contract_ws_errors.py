"""Issue 17: the error codes and close codes of the WebSocket contract
(PROTOCOL §3, §8) that no other test held to one outcome: `unauthorized`,
`internal` (state that cannot load), `unavailable` with the database down
(then nothing applied), close code 1009 for msgpack and for compressed frames."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgpack
import pytest

from tests.conftest import Harness
from tests.flows import (
    ADMIN,
    bearer,
    doc,
    http_call,
)
from tests.pgproxy import proxied_server

# -- welcome ---------------------------------------------------------------------------


# -- error codes ------------------------------------------------------------------------


async def test_unauthorized_on_the_socket(server: Harness) -> None:
    """A refused header token: HTTP 401 with the `unauthorized` body before
    the upgrade; in `hello`: close 4401 with no welcome."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            server.ws_url.replace("ws://", "http://", 1),
            headers={
                **bearer("not.a.token"),
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        ) as r:
            assert r.status == 401
            body = await r.json()
        assert body["error"]["code"] == "unauthorized" and body["error"]["message"], body
        ws = await http.ws_connect(server.ws_url, protocols=("enf.v1.json",))
        await ws.send_str(json.dumps({"type": "hello", "data": {"token": "not.a.token"}}))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401
        # A first frame that is not hello is refused the same way.
        ws = await http.ws_connect(server.ws_url, protocols=("enf.v1.json",))
        await ws.send_str(json.dumps({"id": "p", "type": "ping", "data": {}}))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401


async def _plant_broken_snapshot(database: str, sid: str, state: dict[str, Any]) -> None:
    """A snapshot row for a session no actor has loaded, with `state` for the
    session's state: what a damaged row (a bad restore, a manual edit) looks
    like to the server."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "INSERT INTO snapshots (actor_id, seq, state) VALUES ($1, 1, $2::jsonb)",
            f"session:{sid}",
            json.dumps({"state": state, "head_hash": "0" * 64}),
        )
    finally:
        await conn.close()


@pytest.mark.expects_server_errors(
    "a session whose stored state is damaged fails in its handler: logged",
    match=r"failed handling|GET /v1/sessions/\S+ failed",
)
async def test_internal_when_the_stored_state_is_damaged(server: Harness, database: str) -> None:
    """There is no way to make a healthy server answer `internal` from the
    wire: it is what a request gets when the server fails on it. Damaged
    stored state (a snapshot row missing most of its fields) is the one way
    in from outside the process, without a mock of our code."""
    sid = str(uuid.uuid4())
    await _plant_broken_snapshot(database, sid, {"state": "REQUESTED", "participants": {}})
    admin = await server.client(ADMIN, "admin")
    r = await admin.request("session.join", {"session_id": sid})
    assert r["ok"] is False and r["error"]["code"] == "internal", r
    assert r["error"]["message"] == "internal error"  # nothing of the failure leaks
    status, body = await http_call(
        server, "GET", f"/v1/sessions/{sid}", server.token(ADMIN, "admin")
    )
    assert status == 500 and body["error"]["code"] == "internal", (status, body)
    # The server carries on for everyone else.
    assert "server_time" in await admin.call("ping")
    c = await server.client("c1", "customer")
    assert (await c.call("session.request", {"idempotency_key": "k", "document": doc()}))[
        "state"
    ] == "REQUESTED"


@pytest.mark.expects_server_errors(
    "the damaged snapshot fails the activation: logged", match=r"activation of \S+ failed"
)
async def test_internal_when_the_stored_state_cannot_be_loaded(
    server: Harness, database: str
) -> None:
    sid = str(uuid.uuid4())
    await _plant_broken_snapshot(database, sid, {"state": "REQUESTED"})
    admin = await server.client(ADMIN, "admin")
    r = await admin.request("session.join", {"session_id": sid})
    assert r["ok"] is False and r["error"]["code"] == "internal", r


async def test_unavailable_while_the_database_is_down_then_nothing_was_applied(
    database: str, tmp_path: Path, held_socket: socket.socket
) -> None:
    """Single node, end to end: Postgres goes away under a running server (the
    TCP proxy drops every connection and the next ones are refused): a request
    gets `unavailable` and /ready 503; once it is back, the same request goes
    through as the first, and the session's journal starts at seq 1."""
    dead = ("127.0.0.1", held_socket.getsockname()[1])  # held, not listening: refused
    # No outbox: the delivery worker is not under test (see test_offer_storm.py).
    async with proxied_server(database, tmp_path, outbox=False) as (h, proxy):
        customer = await h.client("c1", "customer")
        assert (await http_call(h, "GET", "/ready"))[0] == 200
        live = proxy.target
        proxy.target = dead
        proxy.cut_all()
        body = {"idempotency_key": "k", "document": doc()}
        r = await customer.request("session.request", body, timeout=30)
        assert r["ok"] is False and r["error"]["code"] == "unavailable", r
        # Counted as the server's failure (the error-rate alert), not a refusal.
        counted = h.services.metrics.registry.get_sample_value(
            "enf_requests_total", {"type": "session.request", "outcome": "unavailable"}
        )
        assert counted == 1, counted
        status, ready = await http_call(h, "GET", "/ready")
        assert status == 503 and ready["checks"]["database"] != "ok", ready
        # The socket stays open, and requests that need no database are answered.
        assert "server_time" in await customer.call("ping")

        proxy.target = live
        assert (await http_call(h, "GET", "/ready"))[0] == 200
        reply = await customer.call("session.request", body, timeout=30)
        assert reply["state"] == "REQUESTED"
        first = await customer.expect("session.state", state="REQUESTED")
        assert first["seq"] == 1 and first["data"]["prev"] is None
        status, journal = await http_call(
            h, "GET", f"/v1/sessions/{reply['session_id']}/journal", h.token(ADMIN, "admin")
        )
        assert status == 200 and [e["seq"] for e in journal["events"]] == [1]


# -- close codes ---------------------------------------------------------------------------


@pytest.mark.sends_past_the_client("the exact-size frame is written on the socket, id and all")
async def test_frame_over_the_limit_closes_1009_on_msgpack(server: Harness) -> None:
    c = await server.client("c1", "customer", codec="msgpack")
    assert c.ws is not None

    def frame(size: int) -> bytes:
        base: dict[str, Any] = {"id": "big", "type": "ping", "data": {"p": b""}}
        pad = size - len(msgpack.packb(base))
        # A bin 32 header is longer than the empty one: aim again.
        body = msgpack.packb({**base, "data": {"p": b"x" * pad}})
        body = msgpack.packb({**base, "data": {"p": b"x" * (pad - (len(body) - size))}})
        assert len(body) == size
        return bytes(body)

    await c.ws.send_bytes(frame(65_536))  # exactly the limit: answered
    reply = await c.wait(lambda: next((f for f in c.frames if f.get("re") == "big"), None))
    assert reply["ok"], reply
    await c.ws.send_bytes(frame(65_537))
    await asyncio.wait_for(c.closed.wait(), 5)
    assert c.close_code == 1009


@pytest.mark.parametrize(("size", "closed"), [(65_536, False), (65_537, True)])
async def test_the_frame_limit_counts_after_decompression(
    server: Harness, size: int, closed: bool
) -> None:
    """permessage-deflate: a frame that is small on the wire but over
    65,536 bytes once inflated closes with 1009; exactly 65,536 is allowed."""
    token = server.token("c1", "customer")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            server.ws_url, headers=bearer(token), protocols=("enf.v1.json",), compress=15
        ) as ws,
    ):
        assert ws.compress == 15, "the server did not accept permessage-deflate"
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        base = json.dumps({"id": "z", "type": "ping", "data": {"p": ""}}, separators=(",", ":"))
        text = json.dumps(
            {"id": "z", "type": "ping", "data": {"p": "x" * (size - len(base))}},
            separators=(",", ":"),
        )
        assert len(text) == size
        await ws.send_str(text)
        msg = await ws.receive(timeout=5)
        if closed:
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            assert ws.close_code == 1009
        else:
            assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["re"] == "z"

"""The runtime's limits, end to end: a client that cannot keep up is closed
with 1013 and loses nothing durable; a flooding client is closed with 4429;
an idle session is passivated (snapshot written) and picks up where it was."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from typing import Any

import asyncpg
import pytest

from actors.localhost import LocalHost
from tests.conftest import MakeServer
from tests.flows import (
    assert_gapless,
    assigned_session,
    in_the_call,
    session_events,
)


class RawWebSocket:
    """A WebSocket client over a plain socket with a tiny receive buffer, that
    reads only when told to: a client too slow for its session's events."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, port))
        self.sock.sendall(
            (
                "GET /v1/ws HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: enf.v1.json\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def close(self) -> None:
        self.sock.close()

    def send(self, frame: dict[str, Any]) -> None:
        self._send_frame(0x1, json.dumps(frame).encode())

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def read_all(self, timeout: float = 20.0) -> tuple[list[dict[str, Any]], int | None]:
        """Read (now, at full speed) until the server's close frame; answer it.
        Returns the data frames and the close code."""
        self.sock.settimeout(timeout)
        frames: list[dict[str, Any]] = []
        while True:
            while len(self.buf) >= 2:
                opcode, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) < 4:
                        break
                    n, off = int(struct.unpack(">H", self.buf[2:4])[0]), 4
                elif n == 127:
                    if len(self.buf) < 10:
                        break
                    n, off = int(struct.unpack(">Q", self.buf[2:10])[0]), 10
                if len(self.buf) < off + n:
                    break
                payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
                if opcode == 0x1:
                    frames.append(json.loads(payload))
                elif opcode == 0x8:
                    self._send_frame(0x8, payload[:2])
                    return frames, int(struct.unpack(">H", payload[:2])[0])
            chunk = self.sock.recv(65536)
            if not chunk:
                return frames, None
            self.buf += chunk


async def test_a_client_too_slow_for_durable_events_is_closed_and_resumes_without_loss(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_server(outbound_queue=16, rate_limit=100_000, heartbeat_s=120)
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    await customer.close()

    port = h.server.port
    assert port is not None
    slow = await asyncio.to_thread(RawWebSocket, "127.0.0.1", port, h.token("c1", "customer"))
    await asyncio.to_thread(
        slow.send, {"id": "j", "type": "session.join", "data": {"session_id": sid}}
    )
    # Loopback socket buffers hold megabytes; shrink the server side of this
    # one so that a few thousand events are more than it can take.
    server_side = next(iter(h.connections_of("c1")))
    request = server_side.ws._req
    assert request is not None and request.transport is not None
    sock = request.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    # The notary records checks; every one is an event the slow client must get.
    # It never reads, so its socket, then the server's queue for it, fill up.
    def too_slow() -> bool:
        return any("client too slow" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="gateway.connection"):
        for i in range(5000):
            await notary.call(
                "checks.record",
                {
                    "session_id": sid,
                    "comprehension_confirmed": True,
                    "duress_check_passed": i % 2 == 0,
                },
            )
            if too_slow():
                break
    assert too_slow(), "the server never found the client too slow"
    try:
        frames, code = await asyncio.to_thread(slow.read_all)
    finally:
        slow.close()
    # The close frame queues behind what the client did not read; a client that
    # reads on sees 1013 (PROTOCOL §8: client too slow, resume with since_seq).
    assert code == 1013
    reply = next(f for f in frames if f.get("re") == "j")
    head = reply["data"]["session"]["seq"]
    got = [f for f in frames if f.get("type") == "event" and "seq" in f]
    # Whatever it got is the start of the stream, without a gap; the rest was
    # not dropped silently: it was closed before it would have missed one.
    assert got, "the slow client got no events before it was closed"
    assert_gapless(got, head + 1)
    final_seq = (await notary.call("session.join", {"session_id": sid}))["session"]["seq"]
    assert got[-1]["seq"] < final_seq

    again = await h.client("c1", "customer")
    await again.call("session.join", {"session_id": sid, "since_seq": got[-1]["seq"]})
    await again.wait(
        lambda: (evs := session_events(again, sid)) and evs[-1]["seq"] == final_seq, 20
    )
    assert_gapless(session_events(again, sid), got[-1]["seq"] + 1)


async def test_sustained_flooding_closes_the_connection_with_4429(make_server: MakeServer) -> None:
    h = await make_server(rate_limit=5)
    c = await h.client("flood", "customer")
    # Ten times the limit (50/s) for five whole seconds, then a little more.
    for _ in range(7 * 60):
        if c.closed.is_set():
            break
        await c.send_raw({"id": "p", "type": "ping", "data": {}})
        await asyncio.sleep(1 / 60)
    await asyncio.wait_for(c.closed.wait(), 5)
    assert c.close_code == 4429
    refused = [f for f in c.frames if f.get("ok") is False]
    assert refused and all(f["error"]["code"] == "rate_limited" for f in refused)
    # The server still serves everyone else.
    other = await h.client("other", "customer")
    assert "server_time" in await other.call("ping")


async def test_an_idle_session_is_passivated_with_a_snapshot_and_carries_on(
    make_server: MakeServer, database: str
) -> None:
    h = await make_server(passivate_after_s=0.3, snapshot_every=3, reconnect_grace_s=0.2)
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    for i in range(4):
        await notary.call(
            "checks.record",
            {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": i == 3},
        )
    # The act done and the call ended: nothing left for a timer (a paused act
    # in the call keeps its pause timeout, and its actor, PROTOCOL §5).
    await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
    await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
    await notary.call("video.end", {"session_id": sid})
    before = (await notary.call("session.join", {"session_id": sid}))["session"]
    await customer.close()
    await notary.close()

    actor = f"session:{sid}"
    host = h.services.host
    assert isinstance(host, LocalHost)  # not the Ray host: this test runs in one process
    for _ in range(150):  # the sweeper runs every second
        if not host.is_active(actor):
            break
        await asyncio.sleep(0.1)
    assert not host.is_active(actor), "the idle session was not passivated"

    conn = await asyncpg.connect(database)
    try:
        snap_seq = await conn.fetchval("SELECT seq FROM snapshots WHERE actor_id = $1", actor)
        tail = await conn.fetch(
            "SELECT seq, name, data FROM journal WHERE actor_id = $1 AND seq > $2 ORDER BY seq",
            actor,
            before["seq"],
        )
    finally:
        await conn.close()
    # Both left (their reconnect grace expired), then the actor was passivated
    # with a snapshot of its latest state.
    assert [(r["name"], json.loads(r["data"])["user_id"]) for r in tail] == [
        ("participant.left", "c1"),
        ("participant.left", "n1"),
    ], [tuple(r) for r in tail]
    journal_head = tail[-1]["seq"]
    assert snap_seq == journal_head

    notary = await h.client("n1", "enp")
    customer = await h.client("c1", "customer")
    after = (await notary.call("session.join", {"session_id": sid}))["session"]
    assert after["state"] == "VIDEO_COMPLETED"
    assert after["checks"] == before["checks"]
    assert after["seq"] == journal_head  # the snapshot; its participant.joined follows
    joined = await notary.expect("participant.joined")
    assert joined["seq"] == journal_head + 1
    await customer.call("session.join", {"session_id": sid, "since_seq": before["seq"]})
    await notary.call("session.notarize", {"session_id": sid})
    await customer.expect("session.notarized")
    events = session_events(customer, sid)
    assert_gapless(events, before["seq"] + 1)

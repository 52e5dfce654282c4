"""A connection's writer (gateway.outbound): a task only while frames wait,
frames in order, the queue's bound (1013, or an ephemeral event dropped), a
replay waiting for room, a socket gone while writing; and the shared timer
of token expiries (gateway.expiry)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from actors.bus import LocalBus
from core.messages import Delivery
from gateway.auth import Identity
from gateway.codec import JsonCodec
from gateway.connection import Connection
from gateway.expiry import expiries
from gateway.metrics import Metrics
from gateway.services import Services

BOUND = 16


class FakeSocket:
    """Records frames; `gate` cleared holds every write; `fail` breaks them."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.raw: list[str] = []  # the frames as written
        self.closed: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def send_str(self, frame: str) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionResetError("gone")
        self.raw.append(frame)
        self.sent.append(json.loads(frame))

    async def send_bytes(self, frame: bytes) -> None:
        raise AssertionError("a JSON connection sends text")

    async def close(self, code: int, message: bytes) -> None:
        self.closed.append(code)


def connection(
    ws: FakeSocket, expires_at: float | None = None, bus: LocalBus | None = None
) -> Connection:
    services = SimpleNamespace(
        settings=SimpleNamespace(outbound_queue=BOUND, rate_limit=50.0),
        metrics=Metrics(),
        leases=None,
        bus=bus or LocalBus(),
        journal=None,
    )
    ident = Identity("u1", "customer", True, expires_at=expires_at)
    return Connection(cast(Any, ws), ident, JsonCodec(), cast(Services, services), "127.0.0.1")


def event(n: int) -> dict[str, Any]:
    return {"type": "e", "data": {"n": n}}


async def test_idle_has_no_writer_and_a_burst_is_written_in_order_by_one_task() -> None:
    ws = FakeSocket()
    conn = connection(ws)
    assert conn._out is None and not asyncio.all_tasks() - {asyncio.current_task()}
    for n in range(BOUND - 1):
        conn.send(event(n))
    assert conn._out is not None
    writer = conn._out.task
    await conn.drain()
    assert [f["data"]["n"] for f in ws.sent] == list(range(BOUND - 1))
    assert writer is not None and writer.done()
    assert conn._out is None  # drained: nothing kept
    conn.send(event(99))  # a new writer for the next frame
    await conn.drain()
    assert ws.sent[-1]["data"]["n"] == 99 and conn._out is None


async def test_frames_queued_while_writing_follow_in_order() -> None:
    ws = FakeSocket()
    ws.gate.clear()
    conn = connection(ws)
    conn.send(event(0))
    await asyncio.sleep(0)  # the writer holds frame 0
    for n in range(1, 5):
        conn.send(event(n))
    ws.gate.set()
    await conn.drain()
    assert [f["data"]["n"] for f in ws.sent] == [0, 1, 2, 3, 4]


async def test_the_bound_drops_ephemeral_events_and_closes_with_1013() -> None:
    ws = FakeSocket()
    ws.gate.clear()
    conn = connection(ws)
    for n in range(BOUND + 1):  # the writer takes one out; BOUND wait
        conn.send(event(n))
        await asyncio.sleep(0)
    conn.send(event(100), droppable=True)
    assert not conn.closing
    conn.send(event(101))
    assert conn.closing
    await asyncio.sleep(0)
    assert ws.closed == [1013]
    ws.gate.set()
    await conn.drain()
    sent = [f["data"]["n"] for f in ws.sent]
    assert sent == list(range(BOUND + 1))  # what was queued, in order; neither late one
    await conn.finish()


async def test_a_replay_waits_for_room() -> None:
    ws = FakeSocket()
    ws.gate.clear()
    conn = connection(ws)
    for n in range(BOUND + 1):
        conn.send(event(n))
        await asyncio.sleep(0)
    replay = asyncio.create_task(conn.send_waiting(event(200)))
    await asyncio.sleep(0.01)
    assert not replay.done()  # full: it waits
    ws.gate.set()
    await asyncio.wait_for(replay, 2)
    await conn.drain()
    assert [f["data"]["n"] for f in ws.sent] == [*range(BOUND + 1), 200]
    assert not conn.closing


async def test_a_socket_gone_while_writing() -> None:
    ws = FakeSocket()
    ws.gate.clear()
    conn = connection(ws)
    for n in range(BOUND + 1):
        conn.send(event(n))
        await asyncio.sleep(0)
    replay = asyncio.create_task(conn.send_waiting(event(200)))
    await asyncio.sleep(0)
    ws.fail = True
    ws.gate.set()
    await asyncio.wait_for(replay, 2)  # not left waiting
    assert conn.closing and conn._out is None and ws.sent == []
    conn.send(event(300))  # nothing more is queued
    assert conn._out is None
    await conn.finish()


async def test_finish_while_writing_stops_the_writer() -> None:
    ws = FakeSocket()
    ws.gate.clear()
    conn = connection(ws)
    conn.send(event(0))
    await asyncio.sleep(0)
    assert conn._out is not None
    writer = conn._out.task
    await conn.finish()
    assert writer is not None and writer.cancelled()


async def test_token_expiries_share_one_timer() -> None:
    ws = FakeSocket()
    now = time.time()
    late, soon, gone = (connection(ws, now + t) for t in (0.3, 0.1, 0.05))
    closed: list[str] = []

    def closer(name: str) -> Callable[[int, str], None]:
        return lambda code, message: closed.append(name)

    for conn, name in ((late, "late"), (soon, "soon"), (gone, "gone")):
        conn.close_soon = closer(name)  # type: ignore[method-assign,assignment]
        conn.start()
    assert len(expiries()) == 3
    await gone.finish()  # ended first: never expires
    await asyncio.sleep(0.2)
    assert closed == ["soon"]
    await asyncio.sleep(0.2)
    assert closed == ["soon", "late"] and len(expiries()) == 0


async def test_an_event_fanned_out_is_encoded_once_per_codec() -> None:
    bus = LocalBus()
    sockets = [FakeSocket() for _ in range(3)]
    conns = [connection(ws, bus=bus) for ws in sockets]
    for conn in conns:
        conn.following.pause("session:s1", create=True)
        await conn.following.resume("session:s1", 0, 0, True)
    d = Delivery("session:s1", {"type": "session.updated", "seq": 1, "data": {"n": 1}}, 1)
    bus.publish(d)
    for conn in conns:
        await conn.drain()
    assert list(d.frames) == ["enf.v1.json"]  # one encoding for the three
    frames = [ws.raw[0] for ws in sockets]
    assert all(f is frames[0] for f in frames)
    assert [ws.sent for ws in sockets] == [[d.event]] * 3

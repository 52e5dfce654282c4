"""A connection's following when the bus loses events (Redis away) while the
topic does not flow: held by a request, or catching up. The journal (a real
Postgres) and the bus (the in-process one) are the server's; the outlet is
the socket side, recorded. `missed(topic)` is what the Redis bus calls once
it has resubscribed (cluster/redisbus.py `_missed`).

Found by review: a request's reply whose held events were all of them up
to its head (`_holds`) skipped the journal, so an event committed after the
head and lost on the bus while the request held the topic was not sent
until the topic's next event, which may never come."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from actors.bus import LocalBus
from core.clock import now_iso
from core.messages import Delivery
from gateway.following import Following
from persistence.journal import GENESIS_HASH, Append, Journal, StoredEvent

TOPIC = "session:00000000-0000-5000-8000-000000000001"


class Socket:
    """The outlet: what was sent, in order (seqs)."""

    closing = False

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.log = logging.LoggerAdapter(logging.getLogger(__name__), {})
        self.tasks: set[asyncio.Task[None]] = set()
        self.on_send: list[Any] = []  # callbacks run as an event is sent from the journal
        self.arrived = asyncio.Event()

    def send(self, msg: dict[str, Any], **how: Any) -> None:  # droppable, frames: not used
        self.sent.append(msg["seq"])
        self.arrived.set()

    async def send_waiting(self, msg: dict[str, Any]) -> None:
        self.send(msg)
        while self.on_send:
            await self.on_send.pop(0)()

    def close_soon(self, code: int, message: str) -> None:
        raise AssertionError(f"closed {code}: {message}")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def until(self, seqs: list[int]) -> None:
        while self.sent != seqs:
            assert len(self.sent) < len(seqs), f"sent {self.sent}, expected {seqs}"
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


class Topic:
    """Events of one topic committed to the journal, published or not."""

    def __init__(self, journal: Journal, bus: LocalBus) -> None:
        self.journal, self.bus = journal, bus
        self.head, self.prev = 0, GENESIS_HASH

    async def commit(self, *, published: bool) -> None:
        self.head += 1
        e = StoredEvent.make(TOPIC, self.head, "test.event", {"n": self.head}, now_iso(), self.prev)
        self.prev = e.hash
        await self.journal.append(Append(TOPIC, [e]))
        if published:
            self.bus.publish(Delivery(TOPIC, e.wire(), e.seq))


async def test_an_event_lost_while_a_new_follow_is_held_is_read_back(journal: Journal) -> None:
    bus, socket = LocalBus(), Socket()
    following = Following(socket, "c1", bus, journal, 1000)
    topic = Topic(journal, bus)
    # session.request: the topic followed and held before the ask.
    assert following.pause(TOPIC, create=True)
    await topic.commit(published=True)  # its event: held
    await topic.commit(published=False)  # the next (an assignment), lost on the bus
    following.missed(TOPIC)  # the bus is back while the request holds the topic
    # The reply: follow from 0, the session's head 1, its one event held.
    await following.resume(TOPIC, 0, 1, True)
    await socket.until([1, 2])


async def test_an_event_lost_while_a_request_holds_a_placed_follow_is_read_back(
    journal: Journal,
) -> None:
    bus, socket = LocalBus(), Socket()
    following = Following(socket, "c1", bus, journal, 1000)
    topic = Topic(journal, bus)
    await following.follow(TOPIC, 0)
    await topic.commit(published=True)
    await socket.until([1])
    assert not following.pause(TOPIC, create=False)  # a request to the session
    await topic.commit(published=False)
    following.missed(TOPIC)
    await following.resume(TOPIC, None, None, False)
    await socket.until([1, 2])


async def test_an_event_lost_during_a_catch_up_is_read_back(journal: Journal) -> None:
    bus, socket = LocalBus(), Socket()
    following = Following(socket, "c1", bus, journal, 1000)
    topic = Topic(journal, bus)
    for _ in range(3):
        await topic.commit(published=False)  # committed before the follow

    async def lost_meanwhile() -> None:
        await topic.commit(published=False)
        following.missed(TOPIC)

    # While the journal is being read, another event is committed and lost.
    socket.on_send.append(lost_meanwhile)
    await following.follow(TOPIC, 0)
    await socket.until([1, 2, 3, 4])
    await asyncio.gather(*socket.tasks)
    assert socket.sent == [1, 2, 3, 4]

"""Topic following for one connection: the bus subscriber behind its socket.

- Per followed topic, the last `seq` delivered. Durable events are sent
  exactly once, in order; a gap is filled from the journal, page by page,
  waiting for room in the outbound queue.
- A follow never moves back: a connection never receives the same `(topic,
  seq)` twice, whatever it sends (PROTOCOL §3). The first follow decision
  places it (`since_seq`, or where a reply says); a later one (a repeated
  `session.request`, a re-join with an older `since_seq`) leaves it where it
  is, and the topic's stream on this connection stays gapless and in order.
- While a request to an actor is in flight, that actor's topic is paused
  (its events buffered), so the reply goes out before the events it caused.
- Topics of ephemeral events (no seq) are subscribed as they are, for the
  connection's lifetime; an event for one user reaches that user only.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.bus import TopicBus
from core.messages import Delivery
from gateway import protocol as P
from persistence.journal import Journal, Unavailable

CATCH_UP_PAGE = 256  # journal rows read at a time when replaying to a client


class Outlet(Protocol):
    """What following needs of its connection."""

    closing: bool

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...

    def send(
        self,
        msg: dict[str, Any],
        *,
        droppable: bool = False,
        frames: dict[str, str | bytes] | None = None,
    ) -> None: ...

    async def send_waiting(self, msg: dict[str, Any]) -> None: ...

    def close_soon(self, code: int, message: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


@dataclass(slots=True)
class Follow:
    last_seq: int | None = None  # None until the first follow decision
    paused: int = 0
    catching_up: bool = False
    # Placed where the journal may hold later events (the head was unknown or
    # ahead): they are read once no request holds the topic.
    behind: bool = False
    # The bus lost events (Redis away) while the topic was not flowing: the
    # journal is read once it can flow, whatever was held meanwhile.
    lost: bool = False
    buffer: list[Delivery] = field(default_factory=list)

    @property
    def flowing(self) -> bool:
        return self.last_seq is not None and not self.paused and not self.catching_up


class Following:
    __slots__ = ("bus", "follows", "journal", "max_buffer", "out", "subscriptions", "user_id")

    def __init__(
        self, out: Outlet, user_id: str, bus: TopicBus, journal: Journal, max_buffer: int
    ) -> None:
        self.out = out
        self.user_id = user_id
        self.bus = bus
        self.journal = journal
        self.max_buffer = max_buffer  # buffered live events kept during a catch-up
        self.follows: dict[str, Follow] = {}
        self.subscriptions: set[str] | None = None  # topics of ephemeral events

    # -- the bus subscriber -------------------------------------------------------

    def deliver(self, d: Delivery) -> None:
        if d.seq is None:
            if d.to_user is not None and d.to_user != self.user_id:
                return
            self.out.send(d.event, droppable=True, frames=d.frames)
            return
        f = self.follows.get(d.topic)
        if f is None:
            return
        if f.flowing:
            self._emit(d.topic, f, d)
        else:
            f.buffer.append(d)

    def missed(self, topic: str) -> None:
        """The bus lost what it carried for a while (Redis away): read the
        journal after the last seq sent, as for a gap."""
        f = self.follows.get(topic)
        if f is None:
            return
        if not f.flowing:
            # Held by a request, or a catch-up under way: what they read may
            # end before the events lost; the journal is read after them.
            f.lost = True
            return
        f.catching_up = True
        self.out.spawn(self._catch_up(topic, f))

    def _emit(self, topic: str, f: Follow, d: Delivery) -> None:
        assert f.last_seq is not None and d.seq is not None
        if d.seq <= f.last_seq:
            return
        if d.seq == f.last_seq + 1:
            f.last_seq = d.seq
            self.out.send(d.event, frames=d.frames)
            return
        # A gap (a lossy bus, or events committed before we subscribed): re-read.
        f.buffer.append(d)
        f.catching_up = True
        self.out.spawn(self._catch_up(topic, f))

    def _flush(self, topic: str, f: Follow) -> None:
        buffered, f.buffer = sorted(f.buffer, key=lambda d: d.seq or 0), []
        for i, d in enumerate(buffered):
            if not f.flowing:  # a gap started a catch-up: keep the rest for it
                f.buffer.extend(buffered[i:])
                return
            self._emit(topic, f, d)

    async def _catch_up(self, topic: str, f: Follow) -> None:
        """Send what the journal has after `f.last_seq`, then what was buffered
        meanwhile. The caller has set `f.catching_up`."""
        try:
            while True:
                f.lost = False  # this read covers what was lost so far
                caught_up = await self._replay(topic, f)
                if not caught_up or not f.lost:
                    break
        except Unavailable:
            self.out.log.warning("journal unavailable while catching up %s", topic)
            self.out.close_soon(P.CLOSE_TOO_SLOW, "could not replay events: resume with since_seq")
            return
        finally:
            f.catching_up = False
        if caught_up and not f.paused:
            self._flush(topic, f)

    async def _replay(self, topic: str, f: Follow) -> bool:
        """Journal pages after `f.last_seq`, waiting for room in the outbound
        queue (a long absence is not "too slow"), until the buffered events
        follow on; False if the connection is closing or the gap stays."""
        assert f.last_seq is not None
        stuck_at = None
        while True:
            page = await self.journal.read(topic, f.last_seq, CATCH_UP_PAGE)
            for e in page:
                if e.seq == f.last_seq + 1:
                    f.last_seq = e.seq
                    await self.out.send_waiting(e.wire())
            if self.out.closing:
                return False
            # Live events already sent from the journal are dropped; too many
            # buffered are dropped too: the journal has them all.
            f.buffer = [d for d in f.buffer if (d.seq or 0) > f.last_seq]
            if len(f.buffer) > self.max_buffer:
                f.buffer.clear()
            if len(page) == CATCH_UP_PAGE:
                continue
            if not f.buffer or min(d.seq or 0 for d in f.buffer) == f.last_seq + 1:
                return True
            # Buffered events are ahead of what the journal showed: what lies
            # between was committed meanwhile; read again, once more at most.
            if stuck_at == f.last_seq:
                self.out.log.error("cannot fill a gap after seq %d on %s", f.last_seq, topic)
                self.out.close_soon(P.CLOSE_TOO_SLOW, "event gap: resume with since_seq")
                return False
            stuck_at = f.last_seq

    # -- around a request ---------------------------------------------------------

    def pause(self, topic: str, create: bool) -> bool:
        """Hold a topic's events; returns whether this call created the follow."""
        f = self.follows.get(topic)
        created = False
        if f is None:
            if not create:
                return False
            f = self.follows[topic] = Follow()
            self.bus.subscribe(topic, self)
            created = True
        f.paused += 1
        return created

    async def resume(self, topic: str, after: int | None, head: int | None, created: bool) -> None:
        """Release a pause. With `after`, place a follow not placed yet there:
        events after it are sent, from the journal unless `head` says none
        are missing. A placed follow stays where it is (it never goes back)."""
        f = self.follows.get(topic)
        if f is None:
            return
        f.paused -= 1
        if after is not None and f.last_seq is None:
            # The first decision places the follow; a later, older `after`
            # would send again what this connection was sent: it is ignored.
            f.last_seq = after
            f.behind = head is None or after < head
        if f.last_seq is None:
            if created and not f.paused:
                self.unfollow(topic)
            return
        if f.paused or f.catching_up:
            return
        if f.behind or f.lost:
            behind, f.behind = f.behind, False
            # Held events stand in for the journal only when the bus lost none.
            if f.lost or head is None or not (behind and _holds(f.buffer, f.last_seq, head)):
                f.catching_up = True
                await self._catch_up(topic, f)
                return
        self._flush(topic, f)

    async def follow(self, topic: str, after: int | None) -> None:
        """Follow a topic a reply named (from the start if `after` is None)."""
        created = self.pause(topic, create=True)
        if created:
            await self.subscribed(topic)
        await self.resume(topic, after if after is not None else 0, None, created)

    async def subscribed(self, topic: str) -> None:
        """With a bus across processes, wait for the subscription to hold
        before asking: events the request causes must not go past us."""
        if not await self.bus.subscribed(topic):
            self.out.log.warning("subscription to %s not confirmed in time", topic)

    def subscribe(self, topic: str) -> None:
        """Subscribe to a topic of ephemeral events."""
        if self.subscriptions is None:
            self.subscriptions = set()
        self.subscriptions.add(topic)
        self.bus.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> None:
        if self.subscriptions is not None:
            self.subscriptions.discard(topic)
        self.bus.unsubscribe(topic, self)

    def unfollow(self, topic: str) -> None:
        if self.follows.pop(topic, None) is not None:
            self.bus.unsubscribe(topic, self)

    def close(self) -> None:
        """Stop following and drop every subscription (the socket is gone)."""
        for topic in list(self.follows):
            self.unfollow(topic)
        for topic in list(self.subscriptions or ()):
            self.unsubscribe(topic)


def _holds(buffer: list[Delivery], after: int, head: int) -> bool:
    """Whether the events held while paused are every one after `after` up
    to `head` (the events a request caused, on a topic followed before it
    was asked): then the journal need not be read for them."""
    if len(buffer) < head - after:
        return False
    held = {d.seq for d in buffer}
    return all(seq in held for seq in range(after + 1, head + 1))

"""Clients that record every request, reply and event with timestamps, into
one `History` shared by all the clients of a run (what tests/chaos/checker.py
reads).

`RecordingClient` is the test client (`enf_client.EnfClient`, clients/python) with a recording
codec: every frame sent or received is recorded with its connection's number
and the time. `ResilientClient` behaves as an app should: a request answered
`unavailable` (or `rate_limited`), or left without a reply by a lost
connection, is sent again under the same id; a connection the server closes
is replaced at once, and the new one follows again what the old one followed
(`presence.online` / `session.join` with `since_seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
from enf_client import EnfClient
from enf_client.codec import JsonCodec

from tests.served import Served

Direction = Literal["sent", "received", "opened"]

# Answers that say nothing was done (PROTOCOL §3, §7): an app tries again later.
RETRIED = frozenset({"unavailable", "rate_limited"})


@dataclass(frozen=True, slots=True)
class Record:
    t: float  # seconds since the history began (monotonic clock)
    user: str
    conn: int  # the connection's number in the history (one per connect)
    direction: Direction
    frame: dict[str, Any]


class History:
    """Every frame of every connection of a run, in the order they happened."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._t0 = time.monotonic()
        self._conns = itertools.count(1)

    def new_conn(self) -> int:
        return next(self._conns)

    def record(self, user: str, conn: int, direction: Direction, frame: dict[str, Any]) -> None:
        self.records.append(Record(time.monotonic() - self._t0, user, conn, direction, frame))


class RecordingCodec(JsonCodec):
    """`enf.v1.json`, telling `on_frame` of each frame encoded (sent) and decoded (received)."""

    def __init__(self, on_frame: Callable[[Direction, dict[str, Any]], None]) -> None:
        self._on_frame = on_frame

    def encode(self, msg: dict[str, Any]) -> str:
        self._on_frame("sent", msg)
        return super().encode(msg)

    def decode(self, raw: str | bytes) -> Any:
        frame = super().decode(raw)
        if isinstance(frame, dict):
            self._on_frame("received", frame)
        return frame


class RecordingClient(EnfClient):
    """The test client, recording into `history` as `user`."""

    def __init__(self, served: Served, history: History, user: str, role: str) -> None:
        super().__init__(served.ws_url, served.token(user, role))
        self.user, self.role, self.history = user, role, history
        self.conn = 0
        self.codec = RecordingCodec(self._on_frame)

    def _on_frame(self, direction: Direction, frame: dict[str, Any]) -> None:
        self.history.record(self.user, self.conn, direction, frame)

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        """A new connection (a new number in the history)."""
        self.conn = self.history.new_conn()
        self.welcome = None
        self.closed.clear()
        welcome = await super().connect(timeout)
        self.history.record(self.user, self.conn, "opened", welcome)
        return welcome

    def last_seq(self, topic: str) -> int:
        """The highest seq of `topic` this client has seen, on any connection
        (ephemeral events carry none)."""
        return max(
            (e["seq"] for e in self.events if e.get("topic") == topic and "seq" in e), default=0
        )


class ResilientClient(RecordingClient):
    """Retries by id and reconnects, as an app does (module doc)."""

    TRIES = 60

    def __init__(self, served: Served, history: History, user: str, role: str) -> None:
        super().__init__(served, history, user, role)
        self.follows: dict[str, None] = {}  # topics to follow again after a reconnect
        self._rids = itertools.count(1)
        self._reconnecting = asyncio.Lock()
        self._guards: set[asyncio.Task[None]] = set()
        self._closing = False
        self.retries = 0
        self.reconnects = 0

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        welcome = await super().connect(timeout)
        guard = asyncio.create_task(self._reconnect_when_lost(self.conn))
        self._guards.add(guard)
        guard.add_done_callback(self._guards.discard)
        return welcome

    async def _reconnect_when_lost(self, conn: int) -> None:
        """A connection the server closes (1013: resume with since_seq; 1001)
        is replaced at once, even while this client only waits for events."""
        await self.closed.wait()
        if not self._closing:
            await self.reconnect(conn)

    async def close(self) -> None:
        self._closing = True
        await super().close()
        for guard in list(self._guards):
            guard.cancel()
        await asyncio.gather(*self._guards, return_exceptions=True)

    def next_id(self, prefix: str = "r") -> str:
        """A request id unique to this user over all its connections."""
        return f"{prefix}-{self.user}-{next(self._rids)}"

    async def request(
        self,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        id: Any = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        rid = id if id is not None else self.next_id()
        for attempt in range(self.TRIES):
            if attempt:
                self.retries += 1
                # Pacing the retries (a backoff), not waiting for anything.
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
            conn = self.conn
            try:
                reply = await super().request(type_, data, id=rid, timeout=timeout)
            except ConnectionError:
                await self.reconnect(conn)
                continue
            except TimeoutError:
                continue
            if reply.get("ok") or (reply.get("error") or {}).get("code") not in RETRIED:
                return reply
        raise TimeoutError(f"{self.user}: {type_} {rid} unanswered after {self.TRIES} tries")

    async def reconnect(self, broken: int | None = None) -> None:
        """A new connection, following again what this client followed;
        nothing if `broken` (the connection that failed) was replaced already."""
        async with self._reconnecting:
            if broken is not None and broken != self.conn:
                return
            await self.drop()
            for attempt in itertools.count():
                try:
                    await self.connect()
                    break
                except (aiohttp.ClientError, ConnectionError, OSError, TimeoutError):
                    if attempt >= self.TRIES:
                        raise
                    await asyncio.sleep(0.2)  # pacing: the server is not listening yet
            self.reconnects += 1
        for topic in list(self.follows):
            await self.refollow(topic)

    async def drop(self) -> None:
        """Close this connection (the HTTP session stays for the next one)."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader

    async def refollow(self, topic: str) -> None:
        kind, _, ident = topic.partition(":")
        since = self.last_seq(topic)
        if kind == "notary":
            await self.request("presence.online", {"since_seq": since})
        elif kind == "session":
            # Refused once the session is over for this user: nothing more to follow.
            await self.request("session.join", {"session_id": ident, "since_seq": since})


async def recording_client(
    served: Served, history: History, user: str, role: str
) -> RecordingClient:
    """A connected recording client of `user`, closed with the server."""
    return await _connected(served, RecordingClient(served, history, user, role))


async def resilient_client(
    served: Served, history: History, user: str, role: str
) -> ResilientClient:
    """A connected resilient client of `user`, closed with the server."""
    return await _connected(served, ResilientClient(served, history, user, role))


C = TypeVar("C", bound=RecordingClient)


async def _connected(served: Served, client: C) -> C:
    served.every_client.append(client)  # under the reply net of tests/conftest.py
    await client.connect()
    served.clients.append(client)
    return client

"""A small asyncio TCP proxy that breaks connections on command: put it
between the server and Postgres (or any TCP server) to cut the database away
at a chosen moment, in this process, without blocking the loop.

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = proxy.dsn(database)              # the same DSN, through the proxy
        proxy.cut_all()                        # every connection dropped, now
        cut = proxy.cut_when(b"accept-1234")   # armed: cut before that chunk goes out
        ...
        chunk = await asyncio.wait_for(cut, 10)

A cut aborts both sockets of every current connection at once (nothing
buffered is flushed): Postgres rolls back an open transaction, and the
client's driver sees the connection lost and makes a new one next time.
`proxied_server` starts a test server whose database goes through a proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.conftest import Harness, Servers

CHUNK = 65536
TAIL = 256  # bytes of the previous chunk kept, so that a marker split in two is found


@dataclass(slots=True)
class ProxyStats:
    connections: int = 0  # accepted from clients (and connected upstream)
    refused: int = 0  # accepted, but the target did not answer
    cuts: int = 0  # cut_all() calls and fired cut_when() triggers
    dropped: int = 0  # connections those cuts dropped
    bytes_up: int = 0  # client -> server, forwarded
    bytes_down: int = 0  # server -> client, forwarded


@dataclass(eq=False, slots=True)
class _Link:
    """One proxied connection: the client's socket and the upstream one."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            w.transport.abort()

    def close(self) -> None:
        for w in (self.client, self.upstream):
            w.close()


@dataclass(slots=True)
class _Trigger:
    """An armed cut (`TcpProxy.cut_when`)."""

    marker: bytes
    everything: bool
    reply: bytes | None
    future: asyncio.Future[bytes]
    times: int = 1  # how many matches it cuts before it is disarmed
    link: _Link | None = None  # the connection that carried the marker (with `reply`)
    seen: bytes = b""  # the bytes that matched the marker


class TcpProxy:
    """Listens on 127.0.0.1:<free port> and forwards to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._trigger: _Trigger | None = None
        self._latency = 0.0
        self._down_until = 0.0  # loop time until which new connections are refused

    @classmethod
    def to_dsn(cls, dsn: str) -> TcpProxy:
        """A proxy to the host and port of a Postgres DSN."""
        parts = urlsplit(dsn)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def dsn(self, dsn: str) -> str:
        """`dsn` with its host and port replaced by this proxy's."""
        parts = urlsplit(dsn)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@{self.host}:{self.port}" if user else f"{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- life ---------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, drop every connection, and wait for the pumps."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            link.abort()
        self._links.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.disarm()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- commands -----------------------------------------------------------------

    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._links)

    def cut_all(self) -> int:
        """Drop every current connection at once, both directions; how many."""
        return self._cut(list(self._links))

    def _cut(self, links: list[_Link]) -> int:
        for link in links:
            link.abort()
        self._links.difference_update(links)
        self.stats.cuts += 1
        self.stats.dropped += len(links)
        return len(links)

    def cut_when(
        self, marker: bytes, *, everything: bool = True, reply: bytes | None = None, times: int = 1
    ) -> asyncio.Future[bytes]:
        """Arm a cut: the next time a client->server chunk contains `marker`
        (even split over two chunks), every connection (or, with `everything`
        false, only the one that carried it) is dropped before that chunk is
        forwarded. With `reply`, that chunk is forwarded, and the cut comes
        instead before the first server->client chunk of the same connection
        that contains `reply` (b"COMMIT": the transaction is committed, and
        the client never hears it). The future resolves with the bytes that
        matched first; once fired `times` times (the server's journal writer
        tries a commit once more when it knows the first did not land), the
        cut is disarmed."""
        for needle in (marker, reply):
            if needle is not None and not 0 < len(needle) <= TAIL:
                raise ValueError(f"a marker is 1 to {TAIL} bytes")
        self.disarm()
        future = asyncio.get_running_loop().create_future()
        self._trigger = _Trigger(marker, everything, reply, future, times)
        return future

    def disarm(self) -> None:
        if self._trigger is not None and not self._trigger.future.done():
            self._trigger.future.cancel()
        self._trigger = None

    def down(self, seconds: float) -> int:
        """The database gone and back: every connection dropped now, and new
        ones refused for `seconds` (as a stopped Postgres would); how many dropped."""
        self._down_until = asyncio.get_running_loop().time() + seconds
        return self.cut_all()

    def latency(self, seconds: float) -> None:
        """Delay every chunk, both directions, by `seconds` (0: none)."""
        self._latency = max(0.0, seconds)

    # -- forwarding ---------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if asyncio.get_running_loop().time() < self._down_until:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.connections += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        for pump in (
            self._pump(reader, up_writer, link, upstream=True),
            self._pump(up_reader, writer, link, upstream=False),
        ):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upstream: bool,
    ) -> None:
        tail = b""
        try:
            while chunk := await reader.read(CHUNK):
                window, tail = tail + chunk, (tail + chunk)[-TAIL:]
                if self._trigger is not None and self._triggered(link, upstream, window, chunk):
                    return
                if self._latency:
                    await asyncio.sleep(self._latency)
                writer.write(chunk)
                await writer.drain()
                self._count(upstream, len(chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended (or was cut): end the other side as well.
            if link in self._links:
                self._links.discard(link)
                link.close()

    def _count(self, upstream: bool, n: int) -> None:
        if upstream:
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n

    def _triggered(self, link: _Link, upstream: bool, window: bytes, chunk: bytes) -> bool:
        """Whether the armed cut fires on this chunk (then it is not forwarded)."""
        t = self._trigger
        assert t is not None
        if t.link is None and upstream and _ends_in(window, chunk, t.marker):
            if t.reply is None:
                self._fire(t, link, window)
                return True
            t.link, t.seen = link, window  # forwarded: the cut waits for the answer
        elif t.link is link and not upstream and t.reply and _ends_in(window, chunk, t.reply):
            self._fire(t, link, t.seen + window)
            return True
        return False

    def _fire(self, t: _Trigger, link: _Link, seen: bytes) -> None:
        t.times -= 1
        t.link = None
        if t.times <= 0:
            self._trigger = None
        self._cut(list(self._links) if t.everything else [link])
        if not t.future.done():
            t.future.set_result(seen)


def _ends_in(window: bytes, chunk: bytes, needle: bytes) -> bool:
    """Whether `needle` is in `window` (the last chunks) and ends in `chunk`, the
    newest one: a match in what was forwarded before does not count again."""
    return window.find(needle, max(0, len(window) - len(chunk) - len(needle) + 1)) >= 0


@asynccontextmanager
async def proxied_server(
    database: str, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[Harness, TcpProxy]]:
    """A server in this process (tests/conftest.py's Harness) whose database
    DSN goes through a `TcpProxy` to `database`; both closed after."""
    async with TcpProxy.to_dsn(database) as proxy:
        servers = Servers(proxy.dsn(database), tmp_path)
        try:
            yield await servers.start(**settings), proxy
        finally:
            proxy.disarm()
            proxy.latency(0)
            await servers.close()

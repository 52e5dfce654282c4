"""A lean client for load generation: raw aiohttp WebSockets, the msgpack
codec (`enf.v1.msgpack`), one reader task per connection, replies matched by
id, events kept in a deque until a flow asks for them. No frame log, no
per-frame bookkeeping beyond the latency of each request (and only while a
measurement is on): the generator must not be the bottleneck.

Also: idle connections (a socket and a reader that drops frames, so the
server's heartbeat pings are answered), the CPU time of a process tree read
from /proc, and the Postgres processes on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import resource
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgpack

SUBPROTOCOL = "enf.v1.msgpack"
Event = dict[str, Any]


class Failed(Exception):
    """A request answered `ok: false`, a socket that closed, or a wait that timed out."""

    def __init__(self, kind: str, code: str, message: str = "") -> None:
        super().__init__(f"{kind}: {code} {message}".strip())
        self.kind = kind
        self.code = code


class Stats:
    """Latencies per request type (seconds) while `on`, and every failure."""

    def __init__(self) -> None:
        self.on = False
        self.latencies: dict[str, list[float]] = {}
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}  # the first message of each kind of failure

    def record(self, kind: str, seconds: float) -> None:
        if self.on:
            self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, kind: str, code: str, message: str = "") -> None:
        self.errors[f"{kind}: {code}"] += 1
        self.examples.setdefault(f"{kind}: {code}", message)

    def reset(self) -> None:
        self.latencies = {}


class Conn:
    """One authenticated connection: `call` (request, reply) and `expect` (an event)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stats: Stats, welcome: Event) -> None:
        self.ws = ws
        self.stats = stats
        self.user_id: str = welcome["data"]["user_id"]
        self.events: deque[Event] = deque()
        self.closed = False
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Event]] = {}
        self._wake: asyncio.Future[None] | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, token: str, stats: Stats) -> Conn:
        ws = await http.ws_connect(
            url,
            protocols=(SUBPROTOCOL,),
            headers={"Authorization": f"Bearer {token}"},
            max_msg_size=0,
        )
        first = await ws.receive(timeout=30)
        if first.type != aiohttp.WSMsgType.BINARY:
            raise Failed("connect", "no-welcome", str(first.type))
        welcome = msgpack.unpackb(first.data, raw=False)
        if welcome.get("type") != "welcome":
            raise Failed("connect", "no-welcome", str(welcome))
        return cls(ws, stats, welcome)

    async def _read(self) -> None:
        unpack = msgpack.unpackb
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                body = unpack(msg.data, raw=False)
                re = body.get("re")
                if re is not None:
                    fut = self._pending.pop(re, None)
                    if fut is not None and not fut.done():
                        fut.set_result(body)
                elif body.get("type") == "event":
                    self.events.append(body)
                    if self._wake is not None and not self._wake.done():
                        self._wake.set_result(None)
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Failed("socket", f"closed ({self.ws.close_code})"))
            self._pending.clear()
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)

    async def call(self, kind: str, data: dict[str, Any], timeout: float = 60.0) -> Any:
        """Send a request, wait for its reply; its data, or `Failed` (counted)."""
        if self.closed:
            self.stats.fail(kind, "socket closed")
            raise Failed(kind, "socket closed")
        rid = str(next(self._ids))
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        t0 = time.monotonic()
        await self.ws.send_bytes(msgpack.packb({"id": rid, "type": kind, "data": data}))
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._pending.pop(rid, None)
            self.stats.fail(kind, "timeout")
            raise Failed(kind, "timeout") from None
        except Failed as exc:
            self.stats.fail(kind, exc.code)
            raise
        self.stats.record(kind, time.monotonic() - t0)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            self.stats.fail(kind, str(err.get("code")), str(err.get("message")))
            raise Failed(kind, str(err.get("code")), str(err.get("message")))
        return reply.get("data")

    async def expect(self, match: Callable[[Event], bool], timeout: float) -> Event | None:
        """The first event that matches; events skipped on the way are dropped,
        but for offers (kept for the notary's next wait). None on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        held: list[Event] = []
        try:
            while True:
                while self.events:
                    ev = self.events.popleft()
                    if match(ev):
                        return ev
                    if ev.get("name") == "offer":
                        held.append(ev)
                left = deadline - loop.time()
                if left <= 0 or self.closed:
                    return None
                self._wake = loop.create_future()
                try:
                    await asyncio.wait_for(self._wake, left)
                except TimeoutError:
                    return None
                finally:
                    self._wake = None
        finally:
            self.events.extendleft(reversed(held))

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


def state_is(topic: str, state: str) -> Callable[[Event], bool]:
    """Matches `session.state` to `state` on `topic`."""
    return lambda e: (
        e.get("topic") == topic
        and e.get("name") == "session.state"
        and e["data"].get("state") == state
    )


def named(topic: str, name: str) -> Callable[[Event], bool]:
    return lambda e: e.get("topic") == topic and e.get("name") == name


# -- idle connections ----------------------------------------------------------------------


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read and drop: what keeps the socket open and answers heartbeat pings."""
    async for _ in ws:
        pass


async def open_idle(
    http: aiohttp.ClientSession, url: str, tokens: list[str], concurrency: int = 64
) -> tuple[list[aiohttp.ClientWebSocketResponse], list[asyncio.Task[None]], int]:
    """Connect every token (at most `concurrency` handshakes at a time); the
    sockets, their reader tasks and the number of refused connections."""
    socks: list[aiohttp.ClientWebSocketResponse] = []
    tasks: list[asyncio.Task[None]] = []
    refused = 0
    it = iter(tokens)

    async def worker() -> None:
        nonlocal refused
        for tok in it:
            try:
                ws = await http.ws_connect(
                    url, protocols=(SUBPROTOCOL,), headers={"Authorization": f"Bearer {tok}"}
                )
            except (aiohttp.ClientError, OSError, TimeoutError):
                refused += 1
                continue
            socks.append(ws)
            tasks.append(asyncio.create_task(_drain(ws)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return socks, tasks, refused


async def close_idle(
    socks: list[aiohttp.ClientWebSocketResponse], tasks: list[asyncio.Task[None]]
) -> int:
    """Close them; how many had already been closed by the server."""
    dropped = sum(1 for ws in socks if ws.closed)
    for i in range(0, len(socks), 500):
        await asyncio.gather(*(ws.close() for ws in socks[i : i + 500]), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return dropped


# -- CPU from /proc ------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of `pid`, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of `root` and its live descendants."""
    stats = {pid: s for pid in _pids() if (s := _stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def postgres_cpu(database: str) -> tuple[float, float] | None:
    """CPU seconds of (the backends connected to `database`, every postgres
    process on this machine), or None when there are none to read."""
    mine = every = 0.0
    found = False
    for pid in _pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm != "postgres":
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        s = _stat(pid)
        if s is None:
            continue
        found = True
        every += s[1]
        if f" {database} " in cmd:
            mine += s[1]
    return (mine, every) if found else None


# -- CPU and load per phase ----------------------------------------------------------------


def loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


_PROBE = {
    "session_id": "0ada666e-d635-5c58-a410-7ed97dfa2e0c",
    "n": list(range(40)),
    "s": "x" * 200,
}


def speed_probe() -> float:
    """Milliseconds this process takes for a fixed piece of Python work (JSON
    both ways, a hash, a dict: what a request costs a server), best of three.
    This machine's speed moves by a third within minutes; figures of runs
    whose probes differ compare after dividing by it."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(2000):
            text = json.dumps(_PROBE, sort_keys=True)
            hashlib.sha256(text.encode()).hexdigest()
            dict(json.loads(text))
        best = min(best, time.perf_counter() - t)
    return best * 1000


def machine_now() -> tuple[list[str], float]:
    """The load average and the speed probe (ms), for a report's "Run on"."""
    return loadavg(), speed_probe()


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


@dataclass
class Cpu:
    """CPU seconds of the server tree, its Postgres backends, all Postgres, this
    process and the whole machine, at one moment."""

    server: float
    pg: tuple[float, float] | None
    own: float
    machine: float
    wall: float

    @classmethod
    def now(cls, server_pid: int, database: str) -> Cpu:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            tree_cpu(server_pid),
            postgres_cpu(database),
            ru.ru_utime + ru.ru_stime,
            machine_busy(),
            time.monotonic(),
        )


def cpu_lines(a: Cpu, b: Cpu, count: int) -> list[str]:
    """CPU per notarization, and as share of one core, between `a` and `b`."""
    wall = b.wall - a.wall
    per = max(count, 1)
    rows = [("server (process and children)", b.server - a.server)]
    if a.pg is not None and b.pg is not None:
        rows.append(("Postgres backends of the scratch database", b.pg[0] - a.pg[0]))
        rows.append(("all postgres processes on the machine", b.pg[1] - a.pg[1]))
    rows.append(("load generator (this process)", b.own - a.own))
    rows.append(("whole machine (all processes)", b.machine - a.machine))
    pg_all = (b.pg[1] - a.pg[1]) if a.pg is not None and b.pg is not None else 0.0
    others = b.machine - a.machine - (b.server - a.server) - pg_all - (b.own - a.own)
    rows.append(("other work on the machine (whole minus the above)", others))
    out = ["| process | CPU ms per notarization | cores busy |", "|---|---:|---:|"]
    for label, secs in rows:
        out.append(f"| {label} | {secs * 1000 / per:.1f} | {secs / wall:.2f} |")
    return out


async def pg_counters(dsn: str) -> tuple[int, int, int]:
    """(transactions committed, rows inserted, rows updated) of the database at
    `dsn`, from pg_stat_database (which Postgres updates about once a second)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(row[0]), int(row[1]), int(row[2])

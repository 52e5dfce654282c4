"""Memory per idle WebSocket connection: the ENF server against a bare aiohttp
WebSocket server (bench/yardsticks.py `echo`), in the same run.

    .venv/bin/python bench/conn_memory.py [--connections 10000]
                                          [--database-url postgresql://postgres@127.0.0.1:5432/test]
                                          [--tracemalloc] [--out bench/RESULTS.md]

Each server runs in its own process; a separate client process per server
opens N idle WebSockets to it (raw sockets, one small asyncio protocol each,
answering the server's pings): to the ENF server with a header token (a user
per connection) and each waits for `welcome`. The figure is the server
process's resident memory (VmRSS) after the N connections are open, minus
before (after a warm-up of 200 connections opened and closed), over N.

--tracemalloc runs both servers under tracemalloc (slower, more memory: its
RSS figures are not the ones reported) and prints, per connection, what each
allocated between the two snapshots, by line; the report is not written.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from gateway.auth import mint_token  # noqa: E402

SNAPSHOT_ENV = "ENF_BENCH_SNAPSHOT"  # where a server in tracemalloc mode dumps on SIGUSR1
WARMUP = 200
KEY = base64.b64encode(b"0123456789abcdef").decode()


# -- the client side: idle sockets, as lean as can be -----------------------------------------


class Idle(asyncio.Protocol):
    """One WebSocket: the upgrade, `welcome` awaited if asked, pings answered."""

    def __init__(self, request: bytes, welcome: bool, ready: asyncio.Future[None]) -> None:
        self.request, self.welcome, self.ready = request, welcome, ready
        self.buf = b""
        self.upgraded = False
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's: an asyncio.Transport in all but name
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.ready.set_exception(ConnectionError(head.decode(errors="replace")))
                return
            self.upgraded, self.buf = True, rest
            if not self.welcome:
                self.ready.set_result(None)
        self._frames()

    def _frames(self) -> None:
        while len(self.buf) >= 2:
            opcode, n, at = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if n == 126:
                n, at = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                n, at = int.from_bytes(self.buf[2:10], "big"), 10
            if len(self.buf) < at + n:
                return
            payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
            if opcode == 0x9 and self.transport is not None:  # ping: a masked pong
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 0x1 and b'"welcome"' in payload and not self.ready.done():
                self.ready.set_result(None)


async def open_idle(port: int, n: int, enf: bool) -> list[Idle]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)
    head = (
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: enf.v1.json\r\n"
    )

    async def one(i: int) -> Idle:
        auth = ""
        if enf:
            token = mint_token(harness.SECRET, f"idle{i}", "customer", ttl_s=3600)
            auth = f"Authorization: Bearer {token}\r\n"
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            request = (head + auth + "\r\n").encode()
            _, proto = await loop.create_connection(
                lambda: Idle(request, enf, ready), "127.0.0.1", port
            )
            await asyncio.wait_for(ready, 60)
            return proto

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def client_main(port: int, n: int, enf: bool) -> None:
    """Open n idle sockets, say `ready`, hold them until stdin closes."""
    socks = await open_idle(port, n, enf)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in socks:
        if s.transport is not None:
            s.transport.close()


# -- the server side -----------------------------------------------------------------------


def serve(kind: str, port: str) -> None:
    """A server process (`enf`: run.py; `echo`: the yardstick), dumping a
    tracemalloc snapshot to $ENF_BENCH_SNAPSHOT.<k> on each SIGUSR1."""
    path = os.environ.get(SNAPSHOT_ENV)
    if path:
        tracemalloc.start(int(os.environ.get("ENF_BENCH_FRAMES", "8")))
        dumps = iter(range(100))

        def dump(*_: Any) -> None:
            tracemalloc.take_snapshot().dump(f"{path}.{next(dumps)}")
            Path(f"{path}.done").touch()

        signal.signal(signal.SIGUSR1, dump)
    if kind == "enf":
        sys.argv = [str(ROOT / "run.py")]
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    else:
        sys.argv = ["yardsticks.py", "echo", port]
        runpy.run_path(str(ROOT / "bench" / "yardsticks.py"), run_name="__main__")


class Target:
    """One server process and what was measured of it."""

    def __init__(self, name: str, kind: str, port: int, env: dict[str, str]) -> None:
        self.name, self.kind, self.port, self.env = name, kind, port, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.snapshot = ""
        self.rss: list[int] = []

    def start(self, snapshots: str | None) -> None:
        env = dict(self.env)
        if snapshots:
            self.snapshot = env[SNAPSHOT_ENV] = f"{snapshots}/{self.kind}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", self.kind, str(self.port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    def measure(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                self.rss.append(int(line.split()[1]))
                return self.rss[-1]
        raise RuntimeError("no VmRSS")

    def dump(self) -> None:
        """A tracemalloc snapshot of the server, if in that mode (blocks: no load then)."""
        if not self.snapshot:
            return
        assert self.proc is not None
        done = Path(f"{self.snapshot}.done")
        done.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        while not done.exists():
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def hold(target: Target, n: int) -> asyncio.subprocess.Process:
    """A client process holding n idle sockets to `target`, once all are ready."""
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "client",
        str(target.port),
        str(n),
        target.kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None
    line = await client.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"{target.name}: the client failed ({await client.wait()})")
    return client


async def release(client: asyncio.subprocess.Process) -> None:
    assert client.stdin is not None
    client.stdin.close()
    await client.wait()


async def measure(target: Target, n: int) -> None:
    await harness.wait_port(target.port)
    await release(await hold(target, WARMUP))  # imports and pools, before measuring
    await asyncio.sleep(2)
    target.measure()
    await asyncio.to_thread(target.dump)
    harness.say(f"{target.name}: opening {n} idle connections")
    started = time.monotonic()
    client = await hold(target, n)
    harness.say(f"{target.name}: {n} open in {time.monotonic() - started:.1f} s")
    await asyncio.sleep(3)
    target.measure()
    await asyncio.to_thread(target.dump)
    await release(client)


# -- the report ----------------------------------------------------------------------------


def top(target: Target, n: int, limit: int = 25) -> list[str]:
    before = tracemalloc.Snapshot.load(f"{target.snapshot}.0")
    after = tracemalloc.Snapshot.load(f"{target.snapshot}.1")
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    lines = [f"{target.name}: traced {total / n / 1024:.2f} KB per connection; by line:"]
    for s in stats[:limit]:
        frame = s.traceback[0]
        where = f"{frame.filename.replace(str(ROOT), '.')}:{frame.lineno}"
        lines.append(f"  {s.size_diff / n:8.0f} B  {s.count_diff / n:5.2f} blocks  {where}")
    return lines


def report(targets: list[Target], n: int) -> str:
    per = {t.name: (t.rss[1] - t.rss[0]) / n for t in targets}
    echo, enf = per["bare aiohttp (echo)"], per["ENF server"]
    lines = [
        "## Memory per idle WebSocket connection (bench/conn_memory.py)",
        "",
        f"Run on {harness.machine()}, Python {sys.version.split()[0]}; both servers, their"
        " clients and Postgres on one machine (shared with other work).",
        "",
        "Reproduce (Postgres at the URL, a scratch database is created and dropped):",
        "",
        f"    .venv/bin/python bench/conn_memory.py --connections {n}",
        "",
        f"{n:,} idle WebSockets to each server, in the same run; each server in its own"
        " process, the clients (raw sockets answering pings) in another. Resident memory"
        " (VmRSS) of the server process after the connections are open minus before"
        f" (after a warm-up of {WARMUP} connections opened and closed), over {n:,}.",
        "",
        "| server | RSS before | RSS after | per connection | vs bare |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in targets:
        lines.append(
            f"| {t.name} | {t.rss[0] / 1024:.1f} MB | {t.rss[1] / 1024:.1f} MB |"
            f" {per[t.name]:.1f} KB | {per[t.name] / echo:.2f}x |"
        )
    lines += ["", f"Target: ENF / bare aiohttp **{enf / echo:.2f}x** (target <= 1.2x)."]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    n = args.connections
    async with harness.Scratch(args.database_url) as scratch:
        enf = harness.Server(scratch.dsn)  # its settings (env and port), started here
        targets = [
            Target("bare aiohttp (echo)", "echo", harness.free_port(), dict(os.environ)),
            Target("ENF server", "enf", enf.port, enf.env),
        ]
        with tempfile.TemporaryDirectory() as scratch_dir:
            tmp = args.snapshots or scratch_dir
            try:
                for t in targets:
                    t.start(tmp if args.tracemalloc else None)
                for t in targets:
                    await measure(t, n)
            finally:
                for t in targets:
                    t.stop()
            if args.tracemalloc:
                for t in targets:
                    print("\n".join(top(t, n)))
                for t in targets:
                    print(f"{t.name}: RSS (under tracemalloc) {(t.rss[1] - t.rss[0]) / n:.1f} KB")
                return
    text = report(targets, n)
    if args.no_write:
        print(text)
    else:
        harness.publish(args, "conn_memory", text)


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    raise_nofile()  # the children inherit it
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["client"]:
        uvloop.run(client_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "enf"))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--connections", type=int, default=10_000)
        parser.add_argument("--tracemalloc", action="store_true")
        parser.add_argument("--snapshots", help="with --tracemalloc: keep the snapshots here")
        parser.add_argument("--no-write", action="store_true", help="print, leave --out alone")
        harness.add_common_args(parser)
        uvloop.run(main(parser.parse_args()))

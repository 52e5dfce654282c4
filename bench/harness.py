"""What the benchmarks share: the ENF server and a scratch database as an
operator runs them, the yardstick servers, sessions brought to the video
step, the request/reply driver and its figures, and the command line and
report conventions (each script writes its own section of bench/RESULTS.md).

A script imports this after putting the project's root on sys.path:

    ROOT = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(ROOT))
    from bench.harness import ...  # noqa: E402
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from enf_client import EnfClient

from bench.load_client import speed_probe, tree_cpu
from bench.sections import write_section
from gateway.auth import mint_token

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-bench-secret-bench-secret-0123456789"

Frame = Callable[[int, int], dict[str, Any]]  # (connection, request number) -> frame


# -- the run ------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine(probe: bool = True) -> str:
    """Today, the architecture and the cores: what a report's "Run on" names;
    with `probe`, this machine's speed now (`load_client.speed_probe`: these
    machines differ from one day to the next, and move within minutes)."""
    text = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores"
    if probe:
        text += f" (speed probe {speed_probe():.0f} ms, `load_client.speed_probe`: lower is faster)"
    return text


def database_url() -> str:
    """The Postgres the benchmarks create their scratch databases in."""
    return os.environ.get("ENF_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def add_common_args(parser: argparse.ArgumentParser, *, database: bool = True) -> None:
    """--database-url (when the script takes one) and --out."""
    if database:
        parser.add_argument("--database-url", default=database_url())
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))


def publish(args: argparse.Namespace, section: str, text: str) -> None:
    """The report on stdout, and as the script's section of --out."""
    print(text)
    write_section(Path(args.out), section, text)


# -- figures ------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The p-quantile of `values` (seconds), in milliseconds."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


def mean_ms(values: list[float]) -> float:
    return statistics.mean(values) * 1000


def latency_table(first: str, rows: Sequence[tuple[str, list[float]]]) -> list[str]:
    """A Markdown table of p50, p99 and mean (ms), a row per (label, seconds)."""
    lines = [f"| {first} | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|"]
    for label, values in rows:
        lines.append(
            f"| {label} | {pct(values, 0.5):.2f} | {pct(values, 0.99):.2f} |"
            f" {mean_ms(values):.2f} |"
        )
    return lines


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]
    # CPU seconds of the server's process tree in the measured window, when measured.
    server_cpu: float | None = None

    @property
    def cpu_us(self) -> float | None:
        """The server's CPU per round trip, in microseconds."""
        if self.server_cpu is None or not self.count:
            return None
        return self.server_cpu / self.count * 1e6

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, p: float) -> float:
        return pct(self.latencies, p) if self.latencies else float("nan")


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def start_yardstick(kind: str, port: int) -> subprocess.Popen[bytes]:
    """bench/yardsticks.py's `echo` or `relay` server on `port`, as a child.
    Started before anything is measured, so a blocking Popen costs nothing."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "yardsticks.py"), kind, str(port)]
    )


class Scratch:
    """A scratch database, created here and dropped on exit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"enf_bench_{uuid.uuid4().hex[:8]}"
        base, _, _ = url.rpartition("/")
        self.dsn = f"{base}/{self.name}"

    async def __aenter__(self) -> Scratch:
        admin = await asyncpg.connect(self.url)
        await admin.execute(f'CREATE DATABASE "{self.name}"')
        await admin.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        admin = await asyncpg.connect(self.url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        await admin.close()


class Server:
    """The ENF server as a child process, as an operator runs it."""

    def __init__(self, dsn: str, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self.env = {
            **os.environ,
            "ENF_DATABASE_URL": dsn,
            "ENF_PORT": str(self.port),
            "ENF_JWT_SECRET": SECRET,
            "ENF_RECORDING": "off",
            "ENF_RATE_LIMIT": "1000000",  # per-client limits lifted: measure the server
            "ENF_MAX_OPEN_REQUESTS": "1000000",
            "ENF_MAX_CONNECTIONS_PER_USER": "1000000",
            "ENF_HTTP_USER_RATE_LIMIT": "1000000",
            "ENF_ANON_RATE_LIMIT": "1000000",
            "ENF_LOG_LEVEL": os.environ.get("ENF_BENCH_LOG_LEVEL", "WARNING"),
            "ENF_DATA_DIR": str(ROOT / ".enf-data" / "bench"),
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Server:
        # Started before any load is measured, so a blocking Popen costs nothing here.
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, str(ROOT / "run.py")],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        await wait_port(self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- request/reply ---------------------------------------------------------------------------


async def drive(
    name: str,
    sockets: list[aiohttp.ClientWebSocketResponse],
    make: Frame,
    seconds: float,
    warmup: float = 1.0,
    server_pid: int | None = None,
) -> Result:
    """Each socket sends a request, waits for its reply (skipping events),
    repeats. With `server_pid`, the CPU of that process and its children in
    the measured window is read from /proc as well."""
    latencies: list[float] = []
    count = 0
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    cpu: list[float] = []

    async def watch(pid: int) -> None:
        for at in (measure_from, stop_at):
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            cpu.append(tree_cpu(pid))

    async def one(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal count
        n = 0
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                return
            n += 1
            rid = f"{i}-{n}"
            frame = make(i, n)
            frame["id"] = rid
            await ws.send_str(json.dumps(frame))
            while True:
                try:
                    msg = await ws.receive(timeout=30)
                except TimeoutError:
                    raise RuntimeError(f"{name}: no reply to {frame} in 30 s") from None
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"{name}: socket closed ({ws.close_code})")
                body = json.loads(msg.data)
                if body.get("re", body.get("id")) == rid:
                    break
            if body.get("ok") is False:
                raise RuntimeError(f"{name}: {body}")
            t1 = time.monotonic()
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                count += 1

    say(f"{name}: {len(sockets)} connections, {seconds:.0f} s")
    watching = [watch(server_pid)] if server_pid is not None else []
    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)), *watching)
    return Result(name, count, seconds, latencies, cpu[1] - cpu[0] if len(cpu) == 2 else None)


async def connect_many(
    http: aiohttp.ClientSession, url: str, tokens: Sequence[str | None]
) -> list[aiohttp.ClientWebSocketResponse]:
    out = []
    for tok in tokens:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        ws = await http.ws_connect(url, protocols=("enf.v1.json",), headers=headers)
        if tok:
            welcome = json.loads((await ws.receive()).data)
            assert welcome["type"] == "welcome"
        out.append(ws)
    return out


async def close_all(
    sockets: Sequence[aiohttp.ClientWebSocketResponse], clients: Sequence[EnfClient] = ()
) -> None:
    for ws in sockets:
        await ws.close()
    for c in clients:
        await c.close()


def notary_tokens(notary_ids: list[str]) -> list[str]:
    return [mint_token(SECRET, nid, "enp") for nid in notary_ids]


def ping_frame(i: int, k: int) -> dict[str, Any]:
    return {"type": "ping", "data": {}}


def join_frame(sessions: list[str], heads: dict[int, int]) -> Frame:
    """`session.join` at the head: a pure read through the session actor."""
    return lambda i, k: {
        "type": "session.join",
        "data": {"session_id": sessions[i], "since_seq": heads[i]},
    }


def checks_frame(sessions: list[str]) -> Frame:
    return lambda i, k: {
        "type": "checks.record",
        "data": {
            "session_id": sessions[i],
            "comprehension_confirmed": True,
            "duress_check_passed": k % 2 == 0,
        },
    }


async def echo_round_trips(
    http: aiohttp.ClientSession, port: int, n: int, seconds: float, pid: int | None = None
) -> Result:
    """The yardstick: the bare echo server on `port` (process `pid`), n connections."""
    await wait_port(port)
    socks = await connect_many(http, f"ws://127.0.0.1:{port}/v1/ws", [None] * n)
    result = await drive("echo (bare aiohttp)", socks, ping_frame, seconds, server_pid=pid)
    await close_all(socks)
    return result


# -- sessions -------------------------------------------------------------------------------


async def prepare_sessions(
    ws_url: str, n: int
) -> tuple[list[str], list[str], list[str], list[EnfClient]]:
    """n notaries and n customers, each pair in a session in VIDEO_IN_PROGRESS.
    Returns the sessions (in customer order), the notary of each, the
    customers' tokens, and the clients to keep open."""
    http_url = ws_url.replace("ws://", "http://").rsplit("/v1/ws", 1)[0]
    admin = mint_token(SECRET, "bench-admin", "admin")
    async with aiohttp.ClientSession() as http:
        for j in range(n):
            async with http.put(
                f"{http_url}/v1/notaries/bn{j}",
                json={"name": f"N{j}", "tariff": 100.0, "commission_expires": "2035-01-01"},
                headers={"Authorization": f"Bearer {admin}"},
            ) as r:
                assert r.status == 200
    say(f"preparing {n} sessions in VIDEO_IN_PROGRESS")
    keep: list[EnfClient] = []
    notaries = [EnfClient(ws_url, mint_token(SECRET, f"bn{j}", "enp")) for j in range(n)]
    for c in notaries:
        await c.connect()
        await c.call("presence.online")
    keep += notaries
    session_ids, cust_tokens = [], []
    for i in range(n):
        tok = mint_token(SECRET, f"bc{i}", "customer", kyc=True)
        c = EnfClient(ws_url, tok)
        await c.connect()
        sid = (
            await c.call(
                "session.request",
                {
                    "idempotency_key": "b",
                    "document": {
                        "id": f"d{i}",
                        "sha256": "a" * 64,
                        "type": "affidavit",
                        "title": "t",
                    },
                },
            )
        )["session_id"]
        await c.call(
            "session.join", {"session_id": sid, "consent": {"recording": True, "privacy": True}}
        )
        session_ids.append(sid)
        cust_tokens.append(tok)
        keep.append(c)
    say("customers requested and joined; notaries accepting")
    by_notary: dict[str, str] = {}
    for nc in notaries:
        offer = await nc.expect("offer", timeout=30)
        await nc.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
        sid = offer["data"]["session_id"]
        await nc.call("session.join", {"session_id": sid})
        await nc.call("video.start", {"session_id": sid})
        assert nc.welcome is not None
        by_notary[nc.welcome["user_id"]] = sid
    # Customer i and notary bn{k} share session_ids[i]; list notaries in that order.
    notary_of = {sid: nid for nid, sid in by_notary.items()}
    return session_ids, [notary_of[sid] for sid in session_ids], cust_tokens, keep


async def join_heads(
    socks: list[aiohttp.ClientWebSocketResponse], sessions: list[str]
) -> dict[int, int]:
    """Each socket joins its session once; the seq of each session's head."""
    heads = {}
    for i, ws in enumerate(socks):
        await ws.send_str(
            json.dumps({"id": "j0", "type": "session.join", "data": {"session_id": sessions[i]}})
        )
        while True:
            body = json.loads((await ws.receive()).data)
            if body.get("re") == "j0":
                heads[i] = body["data"]["session"]["seq"]
                break
    return heads

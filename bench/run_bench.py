"""Request/reply round trips against the ENF server and a bare aiohttp echo
server, in the same run, plus a one-row-per-transaction Postgres baseline.

    .venv/bin/python bench/run_bench.py [--connections 100] [--seconds 5]
                                        [--database-url postgresql://postgres@127.0.0.1:5432/test]
                                        [--only ping,join,checks,nogroup,inserts]

Writes bench/RESULTS.md. Scenarios (each with N connections, one request in
flight per connection):
  echo      the bare aiohttp echo server (the yardstick)
  ping      the gateway's own cost (`ping`)
  join      a read that reaches a session actor (`session.join`, since_seq at the head)
  checks    a journaled request (`checks.record`): one event committed per request
  nogroup   `checks` again on a second server whose journal commits each append
            in its own transaction (ENF_JOURNAL_MAX_BATCH=1): what group commit buys
  inserts   the same Postgres, one INSERT per transaction, N connections
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
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
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sections import write_section  # noqa: E402
from gateway.auth import mint_token  # noqa: E402
from gateway.client import EnfClient  # noqa: E402

SCENARIOS = ("ping", "join", "checks", "nogroup", "inserts")
SECRET = "bench-secret-bench-secret-bench-secret-0123456789"


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, p: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


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


async def drive(
    name: str,
    sockets: list[aiohttp.ClientWebSocketResponse],
    make: Callable[[int, int], dict[str, Any]],
    seconds: float,
    warmup: float = 1.0,
) -> Result:
    """Each socket sends a request, waits for its reply (skipping events), repeats."""
    latencies: list[float] = []
    count = 0
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds

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
    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    return Result(name, count, seconds, latencies)


async def echo_round_trips(
    http: aiohttp.ClientSession, port: int, n: int, seconds: float
) -> Result:
    """The yardstick: the bare echo server on `port`, n connections."""
    await wait_port(port)
    socks = await connect_many(http, f"ws://127.0.0.1:{port}/v1/ws", [None] * n)
    result = await drive(
        "echo (bare aiohttp)", socks, lambda i, k: {"type": "ping", "data": {}}, seconds
    )
    for ws in socks:
        await ws.close()
    return result


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


async def baseline_inserts(dsn: str, conns: int, seconds: float) -> Result:
    """One row per transaction (autocommit INSERT), `conns` connections."""
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        "DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows ("
        "actor_id text, seq bigint, name text, data jsonb, at timestamptz,"
        " prev_hash text, hash text, PRIMARY KEY (actor_id, seq))"
    )
    await setup.close()
    say(f"baseline: one INSERT per transaction, {conns} connections, {seconds:.0f} s")
    pool = await asyncpg.create_pool(dsn, min_size=conns, max_size=conns)
    latencies: list[float] = []
    count = 0
    stop_at = time.monotonic() + 1.0 + seconds
    measure_from = stop_at - seconds

    async def worker(i: int) -> None:
        nonlocal count
        seq = 0
        async with pool.acquire() as c:
            while time.monotonic() < stop_at:
                seq += 1
                t0 = time.monotonic()
                await c.execute(
                    "INSERT INTO bench_rows VALUES ($1, $2, 'checks.recorded', $3::jsonb,"
                    " now(), $4, $5)",
                    f"w{i}",
                    seq,
                    '{"ok": true}',
                    "0" * 64,
                    "f" * 64,
                )
                if t0 >= measure_from:
                    latencies.append(time.monotonic() - t0)
                    count += 1

    await asyncio.gather(*(worker(i) for i in range(conns)))
    await pool.close()
    return Result(f"inserts ({conns} conns)", count, seconds, latencies)


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
        by_notary[nc.welcome["user_id"]] = sid  # type: ignore[index]
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


def checks_frame(sessions: list[str]) -> Callable[[int, int], dict[str, Any]]:
    return lambda i, k: {
        "type": "checks.record",
        "data": {
            "session_id": sessions[i],
            "comprehension_confirmed": True,
            "duress_check_passed": k % 2 == 0,
        },
    }


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
            "ENF_RATE_LIMIT": "1000000",
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


async def server_scenarios(
    http: aiohttp.ClientSession, args: argparse.Namespace, url: str
) -> list[Result]:
    n, secs = args.connections, args.seconds
    results: list[Result] = []
    sessions, notary_ids, cust_tokens, keep = await prepare_sessions(url, n)
    ping_socks = await connect_many(http, url, cust_tokens)
    if "ping" in args.only:
        results.append(
            await drive("ping", ping_socks, lambda i, k: {"type": "ping", "data": {}}, secs)
        )
    # Each customer connection joins its own session once (journaled), then
    # re-joins at the head: a pure read through the session actor.
    heads = await join_heads(ping_socks, sessions)
    if "join" in args.only:
        results.append(
            await drive(
                "join (actor read)",
                ping_socks,
                lambda i, k: {
                    "type": "session.join",
                    "data": {"session_id": sessions[i], "since_seq": heads[i]},
                },
                secs,
            )
        )
    notary_socks = await connect_many(
        http, url, [mint_token(SECRET, nid, "enp") for nid in notary_ids]
    )
    if "checks" in args.only:
        results.append(
            await drive("checks.record (journaled)", notary_socks, checks_frame(sessions), secs)
        )
    for ws in ping_socks + notary_socks:
        await ws.close()
    for c in keep:
        await c.close()
    return results


async def no_group_commit(http: aiohttp.ClientSession, args: argparse.Namespace) -> Result:
    """The same journaled request on a server that commits each append in its
    own transaction (8 writers, one append each): what group commit is for."""
    n = args.connections
    async with (
        Scratch(args.database_url) as db,
        Server(
            db.dsn,
            {"ENF_JOURNAL_MAX_BATCH": "1", "ENF_JOURNAL_WRITERS": "8", "ENF_DB_POOL_SIZE": "10"},
        ) as server,
    ):
        sessions, notary_ids, _, keep = await prepare_sessions(server.url, n)
        socks = await connect_many(
            http, server.url, [mint_token(SECRET, nid, "enp") for nid in notary_ids]
        )
        result = await drive(
            "checks.record, one transaction per append",
            socks,
            checks_frame(sessions),
            args.seconds,
        )
        for ws in socks:
            await ws.close()
        for c in keep:
            await c.close()
    return result


async def main_async(args: argparse.Namespace) -> list[Result]:
    n, secs = args.connections, args.seconds
    echo_port = free_port()
    # Started before any load is measured, so a blocking Popen costs nothing here.
    echo = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, str(ROOT / "bench" / "echo_server.py"), str(echo_port)]
    )
    results: list[Result] = []
    # limit=0: the default connector caps a session at 100 sockets.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        results.append(await echo_round_trips(http, echo_port, n, secs))
        async with Scratch(args.database_url) as db:
            async with Server(db.dsn) as server:
                results += await server_scenarios(http, args, server.url)
            if "nogroup" in args.only:
                results.append(await no_group_commit(http, args))
            # Postgres here allows 100 connections: the baseline uses the server's
            # pool size (10) and a wider one.
            if "inserts" in args.only:
                results.append(await baseline_inserts(db.dsn, 10, secs))
                results.append(await baseline_inserts(db.dsn, min(n, 50), secs))
    finally:
        await http.close()
        if echo.poll() is None:
            echo.kill()
    return results


def report(results: list[Result], args: argparse.Namespace) -> str:
    by = {r.name: r for r in results}
    echo = by["echo (bare aiohttp)"]
    lines = [
        "## Request/reply (bench/run_bench.py)",
        "",
        f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; server, echo server and load generator on one "
        "machine over loopback (they share the cores).",
        "",
        "Reproduce (Postgres at the URL, a scratch database is created and dropped):",
        "",
        f"    .venv/bin/python bench/run_bench.py --connections {args.connections} "
        f"--seconds {args.seconds}",
        "",
        f"{args.connections} connections, one request in flight each, {args.seconds} s "
        "measured after 1 s of warm-up.",
        "",
        "| scenario | round trips/s | p50 ms | p99 ms | vs bare echo |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = "" if r.name.startswith("inserts") else f"{r.rate / echo.rate:.2f}x"
        lines.append(
            f"| {r.name} | {r.rate:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} | {ratio} |"
        )
    checks = by.get("checks.record (journaled)")
    join = by.get("join (actor read)")
    ins = [r for r in results if r.name.startswith("inserts")]
    lines += ["", "Targets:", ""]
    if join:
        lines.append(f"- actor read / bare echo: **{join.rate / echo.rate:.2f}x** (target >= 0.6x)")
    nogroup = by.get("checks.record, one transaction per append")
    if checks and nogroup:
        lines.append(
            f"- journaled request, group commit / one transaction per append (same server): "
            f"**{checks.rate / nogroup.rate:.2f}x**"
        )
    for r in ins:
        if checks:
            lines.append(
                f"- journaled request / one-row-per-transaction {r.name}: "
                f"**{checks.rate / r.rate:.2f}x** (target >= 2x)"
            )
    lines += [
        "",
        "What these figures mean, what limits them and what was tried: `docs/performance.md`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "ENF_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        type=lambda v: set(v.split(",")),
        help="comma-separated scenarios to run (echo always runs): " + ",".join(SCENARIOS),
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    results = uvloop.run(main_async(args))
    text = report(results, args)
    print(text)
    write_section(Path(args.out), "requests", text)


if __name__ == "__main__":
    main()

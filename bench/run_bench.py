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
import platform
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

SCENARIOS = ("ping", "join", "checks", "nogroup", "inserts")


async def baseline_inserts(dsn: str, conns: int, seconds: float) -> harness.Result:
    """One row per transaction (autocommit INSERT), `conns` connections."""
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        "DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows ("
        "actor_id text, seq bigint, name text, data jsonb, at timestamptz,"
        " prev_hash text, hash text, PRIMARY KEY (actor_id, seq))"
    )
    await setup.close()
    harness.say(f"baseline: one INSERT per transaction, {conns} connections, {seconds:.0f} s")
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
    return harness.Result(f"inserts ({conns} conns)", count, seconds, latencies)


async def server_scenarios(
    http: aiohttp.ClientSession, args: argparse.Namespace, url: str, pid: int | None
) -> list[harness.Result]:
    n, secs = args.connections, args.seconds
    results: list[harness.Result] = []
    sessions, notary_ids, cust_tokens, keep = await harness.prepare_sessions(url, n)
    ping_socks = await harness.connect_many(http, url, cust_tokens)
    if "ping" in args.only:
        results.append(
            await harness.drive("ping", ping_socks, harness.ping_frame, secs, server_pid=pid)
        )
    # Each customer connection joins its own session once (journaled), then
    # re-joins at the head: a pure read through the session actor.
    heads = await harness.join_heads(ping_socks, sessions)
    if "join" in args.only:
        results.append(
            await harness.drive(
                "join (actor read)",
                ping_socks,
                harness.join_frame(sessions, heads),
                secs,
                server_pid=pid,
            )
        )
    notary_socks = await harness.connect_many(http, url, harness.notary_tokens(notary_ids))
    if "checks" in args.only:
        results.append(
            await harness.drive(
                "checks.record (journaled)",
                notary_socks,
                harness.checks_frame(sessions),
                secs,
                server_pid=pid,
            )
        )
    await harness.close_all(ping_socks + notary_socks, keep)
    return results


async def no_group_commit(http: aiohttp.ClientSession, args: argparse.Namespace) -> harness.Result:
    """The same journaled request on a server that commits each append in its
    own transaction (8 writers, one append each): what group commit is for."""
    n = args.connections
    async with (
        harness.Scratch(args.database_url) as db,
        harness.Server(
            db.dsn,
            {"ENF_JOURNAL_MAX_BATCH": "1", "ENF_JOURNAL_WRITERS": "8", "ENF_DB_POOL_SIZE": "10"},
        ) as server,
    ):
        sessions, notary_ids, _, keep = await harness.prepare_sessions(server.url, n)
        socks = await harness.connect_many(http, server.url, harness.notary_tokens(notary_ids))
        result = await harness.drive(
            "checks.record, one transaction per append",
            socks,
            harness.checks_frame(sessions),
            args.seconds,
            server_pid=server.proc.pid if server.proc is not None else None,
        )
        await harness.close_all(socks, keep)
    return result


async def main_async(args: argparse.Namespace) -> list[harness.Result]:
    n, secs = args.connections, args.seconds
    echo_port = harness.free_port()
    echo = harness.start_yardstick("echo", echo_port)
    results: list[harness.Result] = []
    # limit=0: the default connector caps a session at 100 sockets.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        results.append(await harness.echo_round_trips(http, echo_port, n, secs, echo.pid))
        async with harness.Scratch(args.database_url) as db:
            async with harness.Server(db.dsn) as server:
                pid = server.proc.pid if server.proc is not None else None
                results += await server_scenarios(http, args, server.url, pid)
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


def report(results: list[harness.Result], args: argparse.Namespace) -> str:
    by = {r.name: r for r in results}
    echo = by["echo (bare aiohttp)"]
    lines = [
        "## Request/reply (bench/run_bench.py)",
        "",
        f"Run on {harness.machine()}, "
        f"Python {platform.python_version()}; server, echo server and load generator on one "
        "machine over loopback (they share the cores).",
        "",
        "Reproduce (Postgres at the URL, a scratch database is created and dropped):",
        "",
        f"    .venv/bin/python bench/run_bench.py --connections {args.connections} "
        f"--seconds {args.seconds}",
        "",
        f"{args.connections} connections, one request in flight each, {args.seconds} s "
        "measured after 1 s of warm-up. Server CPU: user and system time of the server's "
        "process and its children (for the echo, the echo server's) over the measured "
        "window, from /proc, divided by the round trips.",
        "",
        "| scenario | round trips/s | p50 ms | p99 ms | vs bare echo"
        " | server CPU µs a round trip |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = "" if r.name.startswith("inserts") else f"{r.rate / echo.rate:.2f}x"
        cpu = "" if r.cpu_us is None else f"{r.cpu_us:.1f}"
        lines.append(
            f"| {r.name} | {r.rate:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} | {ratio} | {cpu} |"
        )
    checks = by.get("checks.record (journaled)")
    join = by.get("join (actor read)")
    ins = [r for r in results if r.name.startswith("inserts")]
    lines += ["", "Targets:", ""]
    if join:
        lines.append(f"- actor read / bare echo: **{join.rate / echo.rate:.2f}x** (target >= 0.6x)")
        ping = by.get("ping")
        if join.cpu_us is not None and ping is not None and ping.cpu_us is not None:
            lines.append(
                f"- at 0.6x the echo, a join could take {1e6 / (0.6 * echo.rate):.0f} µs of the"
                f" one core a server process has; it takes {join.cpu_us:.0f} µs, and a `ping`"
                f" (the gateway alone: no actor, no audit row) {ping.cpu_us:.0f} µs"
            )
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
        "--only",
        default=",".join(SCENARIOS),
        type=lambda v: set(v.split(",")),
        help="comma-separated scenarios to run (echo always runs): " + ",".join(SCENARIOS),
    )
    harness.add_common_args(parser)
    args = parser.parse_args()
    results = uvloop.run(main_async(args))
    harness.publish(args, "requests", report(results, args))


if __name__ == "__main__":
    main()

"""Whole notarizations: N idle connections held open, M notaries and M
customers notarizing back to back, then a backlog (K requests waiting with
no notary online, then the M notaries come online and work it off).

    .venv/bin/python bench/notarize_load.py [--idle 2000] [--pairs 20] [--seconds 60]
        [--warmup 5] [--backlog 100] [--database-url postgresql://postgres@127.0.0.1:5432/test]

The full target: --idle 10000 (the process needs `ulimit -n` above N + 1000).

One notarization (ENF_RECORDING=off, so no media): the customer sends
`session.request` and `session.join` (consent, location); the matchmaker
offers it to an available notary, which sends `offer.accept`,
`session.join`, `video.start`, `checks.record`; the customer, on
VIDEO_IN_PROGRESS, `act.sign`; the notary, on `act.signed`, `act.seal`,
`video.end`, `session.notarize`; the customer, on `session.notarized`,
`session.distribute` (no recipients) and waits for COMPLETED. A customer
starts its next request at once; a notary takes whichever offer comes.

Clients: bench/load_client.py (msgpack, raw aiohttp WebSockets). CPU: the
server tree and Postgres from /proc, the generator's own from getrusage.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.load_client import (  # noqa: E402
    Conn,
    Cpu,
    Failed,
    Stats,
    close_idle,
    cpu_lines,
    machine_now,
    named,
    open_idle,
    pg_counters,
    state_is,
    tree_cpu,
)
from gateway.auth import mint_token  # noqa: E402

PH = {"lat": 14.5995, "lng": 120.9842, "country": "PH"}
CONSENT = {"recording": True, "privacy": True}
DOC = {"id": "doc-1", "sha256": "ab" * 32, "type": "affidavit", "title": "Affidavit of loss"}


@dataclass
class Phase:
    """What one phase counts: notarizations, completions, assignments, end-to-end times."""

    stats: Stats = field(default_factory=Stats)
    notarized: int = 0
    completed: int = 0
    assigned: list[float] = field(default_factory=list)  # seconds since `t0`
    done_at: list[float] = field(default_factory=list)  # COMPLETED, seconds since `t0`
    e2e: list[float] = field(default_factory=list)  # request -> session.notarized
    t0: float = field(default_factory=time.monotonic)
    stop: bool = False  # customers: no new request
    notaries_stop: bool = False  # notaries: no new offer


async def wait(c: Conn, phase: Phase, what: str, match: Any, timeout: float) -> None:
    if await c.expect(match, timeout) is None:
        phase.stats.fail(f"wait {what}", "closed" if c.closed else "timeout")
        raise Failed(f"wait {what}", "timeout")


# -- the two parties -------------------------------------------------------------------------


async def submit(c: Conn, key: str) -> tuple[str, float]:
    """`session.request` and `session.join`: the session id and when it was asked for."""
    t0 = time.monotonic()
    reply = await c.call("session.request", {"idempotency_key": key, "document": DOC})
    sid: str = reply["session_id"]
    await c.call("session.join", {"session_id": sid, "consent": CONSENT, "location": PH})
    return sid, t0


async def finish(c: Conn, phase: Phase, sid: str, t0: float, timeout: float) -> None:
    """The customer's part from the assignment on, to COMPLETED."""
    topic = f"session:{sid}"
    await wait(c, phase, "VIDEO_IN_PROGRESS", state_is(topic, "VIDEO_IN_PROGRESS"), timeout)
    await c.call("act.sign", {"session_id": sid, "signature": "c2lnbmF0dXJl"})
    await wait(c, phase, "session.notarized", named(topic, "session.notarized"), 60)
    phase.e2e.append(time.monotonic() - t0)
    phase.notarized += 1
    await c.call("session.distribute", {"session_id": sid, "recipients": []})
    await wait(c, phase, "COMPLETED", state_is(topic, "COMPLETED"), 60)
    phase.completed += 1
    phase.done_at.append(time.monotonic() - phase.t0)


async def customer_loop(c: Conn, phase: Phase, name: str) -> None:
    n = 0
    while not phase.stop:
        n += 1
        try:
            sid, t0 = await submit(c, f"{name}-{n}")
            await finish(c, phase, sid, t0, 120)
        except Failed:
            await asyncio.sleep(0.5)  # counted in stats.errors; a fresh request next


async def notarize(n: Conn, phase: Phase, offer: dict[str, Any]) -> None:
    """The notary's part: from the offer to `session.notarize`."""
    sid = offer["data"]["session_id"]
    topic = f"session:{sid}"
    await n.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    phase.assigned.append(time.monotonic() - phase.t0)
    await n.call("session.join", {"session_id": sid, "location": PH})
    try:
        await n.call("video.start", {"session_id": sid})
    except Failed as exc:  # the customer's join not in yet (counted): wait for it, once
        if exc.code != "conflict":
            raise
        await wait(n, phase, "customer join", named(topic, "participant.joined"), 30)
        await n.call("video.start", {"session_id": sid})
    await n.call(
        "checks.record",
        {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": True},
    )
    await wait(n, phase, "act.signed", named(topic, "act.signed"), 60)
    await n.call("act.seal", {"session_id": sid, "signature": "ZW5wLXNpZw==", "seal": "c2VhbA=="})
    await n.call("video.end", {"session_id": sid})
    await n.call("session.notarize", {"session_id": sid})


async def notary_loop(n: Conn, phase: Phase) -> None:
    while not phase.notaries_stop:
        offer = await n.expect(lambda e: e.get("name") == "offer", 0.5)
        if offer is None:
            continue
        try:
            await notarize(n, phase, offer)
        except Failed as exc:
            if exc.kind != "offer.accept":  # a session left half done: free the notary
                sid = offer["data"]["session_id"]
                try:
                    await n.call("session.cancel", {"session_id": sid, "reason": "bench"})
                except Failed:
                    pass


# -- the run ---------------------------------------------------------------------------------


async def connect(http: aiohttp.ClientSession, url: str, toks: list[str], st: Stats) -> list[Conn]:
    return list(await asyncio.gather(*(Conn.open(http, url, t, st) for t in toks)))


async def put_notaries(http: aiohttp.ClientSession, base: str, ids: list[str]) -> None:
    admin = mint_token(harness.SECRET, "bench-admin", "admin")
    for nid in ids:
        async with http.put(
            f"{base}/v1/notaries/{nid}",
            json={"name": nid, "tariff": 500.0, "commission_expires": "2035-01-01"},
            headers={"Authorization": f"Bearer {admin}"},
        ) as r:
            assert r.status == 200, await r.text()


async def steady(
    args: argparse.Namespace, http: aiohttp.ClientSession, url: str, pid: int, db: harness.Scratch
) -> tuple[Phase, Phase, list[Conn], tuple[Cpu, Cpu], list[int]]:
    """The back-to-back phase; also returns the notaries (still connected)."""
    m = args.pairs
    run = Phase()
    sec = harness.SECRET
    notaries = await connect(
        http, url, [mint_token(sec, f"ln{j}", "enp") for j in range(m)], run.stats
    )
    customers = await connect(
        http, url, [mint_token(sec, f"lc{j}", "customer", kyc=True) for j in range(m)], run.stats
    )
    for nc in notaries:
        await nc.call("presence.online", {})
    harness.say(f"{m} pairs running; {args.warmup:.0f} s warm-up, then {args.seconds:.0f} s")
    loops = [asyncio.create_task(notary_loop(n, run)) for n in notaries]
    cloops = [asyncio.create_task(customer_loop(c, run, f"lc{j}")) for j, c in enumerate(customers)]
    await asyncio.sleep(args.warmup)
    window = Phase(stats=run.stats)
    n0, c0 = run.notarized, run.completed
    e0 = len(run.e2e)
    run.stats.reset()
    run.stats.on = True
    a, pg0 = Cpu.now(pid, db.name), await pg_counters(db.dsn)
    await asyncio.sleep(args.seconds)
    b, pg1 = Cpu.now(pid, db.name), await pg_counters(db.dsn)
    run.stats.on = False
    window.notarized, window.completed = run.notarized - n0, run.completed - c0
    window.e2e = run.e2e[e0:]
    harness.say(f"steady: {window.notarized} notarized in {args.seconds:.0f} s; draining")
    run.stop = True  # each customer finishes the notarization under way, with a notary
    await asyncio.wait(cloops, timeout=150)
    run.notaries_stop = True
    await asyncio.wait(loops, timeout=10)
    for c in customers:
        await c.close()
    for nc in notaries:
        await nc.call("presence.offline", {})
    return window, run, notaries, (a, b), [y - x for x, y in zip(pg0, pg1, strict=True)]


async def backlog(
    args: argparse.Namespace,
    http: aiohttp.ClientSession,
    url: str,
    notaries: list[Conn],
    pid: int,
    db: str,
) -> tuple[Phase, float, tuple[Cpu, Cpu]]:
    """K requests with no notary online, then the notaries come online."""
    k = args.backlog
    ph = Phase()
    ph.stats.on = True
    toks = [mint_token(harness.SECRET, f"lb{j}", "customer", kyc=True) for j in range(k)]
    customers = await connect(http, url, toks, ph.stats)
    for n in notaries:
        n.stats = ph.stats
    a = Cpu.now(pid, db)
    t_sub = time.monotonic()
    subs = await asyncio.gather(
        *(submit(c, f"lb{j}") for j, c in enumerate(customers)), return_exceptions=True
    )
    submit_s = time.monotonic() - t_sub
    harness.say(f"backlog: {k} requests waiting ({submit_s:.2f} s); notaries coming online")
    await asyncio.sleep(1.0)
    ph.t0 = time.monotonic()
    await asyncio.gather(*(n.call("presence.online", {}) for n in notaries))
    loops = [asyncio.create_task(notary_loop(n, ph)) for n in notaries]
    ends = [
        finish(c, ph, s[0], s[1], args.backlog_timeout)
        for c, s in zip(customers, subs, strict=True)
        if not isinstance(s, BaseException)
    ]
    await asyncio.gather(*ends, return_exceptions=True)
    b = Cpu.now(pid, db)
    ph.notaries_stop = True
    await asyncio.wait(loops, timeout=10)
    for c in customers:
        await c.close()
    return ph, submit_s, (a, b)


async def main_async(args: argparse.Namespace) -> str:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    load0 = machine_now()
    try:
        async with harness.Scratch(args.database_url) as db, harness.Server(db.dsn) as server:
            assert server.proc is not None
            pid, base = server.proc.pid, f"http://127.0.0.1:{server.port}"
            await put_notaries(http, base, [f"ln{j}" for j in range(args.pairs)])
            harness.say(f"opening {args.idle} idle connections")
            t = time.monotonic()
            idle_toks = [mint_token(harness.SECRET, f"li{i}", "customer") for i in range(args.idle)]
            socks, tasks, refused = await open_idle(http, server.url, idle_toks)
            idle_s = time.monotonic() - t
            i0 = Cpu.now(pid, db.name)
            await asyncio.sleep(5.0)  # the idle connections alone: heartbeats
            idle_cores = (tree_cpu(pid) - i0.server) / (time.monotonic() - i0.wall)
            win, run, notaries, cpu, pg = await steady(args, http, server.url, pid, db)
            bl = None
            if args.backlog > 0:
                bl = await backlog(args, http, server.url, notaries, pid, db.name)
            for n in notaries:
                await n.close()
            dropped = await close_idle(socks, tasks)
            load1 = machine_now()
        exit_code = server.proc.poll()
        idle = (len(socks), refused, dropped, idle_s, idle_cores)
        return report(args, idle, win, run, (cpu, pg), bl, (load0, load1), exit_code)
    finally:
        await http.close()


def report(
    args: argparse.Namespace,
    idle: tuple[int, int, int, float, float],
    win: Phase,
    run: Phase,
    cpus: tuple[tuple[Cpu, Cpu], list[int]],
    bl: tuple[Phase, float, tuple[Cpu, Cpu]] | None,
    loads: tuple[tuple[list[str], float], tuple[list[str], float]],
    exit_code: int | None,
) -> str:
    held, refused, dropped, idle_s, idle_cores = idle
    cpu, pg = cpus
    per = max(win.notarized, 1)
    cmd = (
        f".venv/bin/python bench/notarize_load.py --idle {args.idle} --pairs {args.pairs}"
        f" --seconds {args.seconds:g} --warmup {args.warmup:g} --backlog {args.backlog}"
    )
    per_min = win.notarized / args.seconds * 60
    lines = [
        "## Whole notarizations under load (bench/notarize_load.py)",
        "",
        f"Run on {harness.machine(probe=False)}, Python {platform.python_version()}; server,"
        " Postgres and load generator on one machine over loopback (they share the cores). "
        f"Load average before/after: {' '.join(loads[0][0])} / {' '.join(loads[1][0])};"
        f" speed probe (`load_client.speed_probe`, lower is faster) before/after:"
        f" {loads[0][1]:.0f} / {loads[1][1]:.0f} ms{' — ' + args.note if args.note else ''}.",
        "",
        f"    {cmd}",
        "",
        "The full target: the same with `--idle 10000` (needs `ulimit -n` > 11000).",
        "ENF_RECORDING=off; msgpack codec; per-client rate limits lifted (bench/harness.py).",
        "",
        f"- idle connections held: **{held}** (opened in {idle_s:.1f} s; refused {refused},"
        f" closed by the server before the end {dropped}); the server's CPU with them"
        f" alone (5 s before the load): {idle_cores:.3f} cores",
        f"- {args.pairs} notaries + {args.pairs} customers back to back, {args.seconds:g} s"
        f" measured after {args.warmup:g} s warm-up: **{win.notarized} notarized"
        f" ({per_min:.0f} per minute)**, {win.completed} reached COMPLETED",
        "",
        "Request latencies in the measured window (reply to request, client side):",
        "",
    ]
    rows = sorted(win.stats.latencies.items())
    rows.append(("notarization: request → session.notarized", win.e2e))
    lines += harness.latency_table("request", [(k, v) for k, v in rows if v])
    lines += ["", f"CPU over the measured window ({win.notarized} notarizations):", ""]
    lines += cpu_lines(cpu[0], cpu[1], win.notarized)
    lines += [
        "",
        f"Postgres per notarization (pg_stat_database, approximate): {pg[0] / per:.1f}"
        f" transactions, {pg[1] / per:.1f} rows inserted, {pg[2] / per:.1f} rows updated.",
    ]
    if bl is not None:
        ph, submit_s, bcpu = bl
        k, m = args.backlog, args.pairs
        first = ph.assigned[m - 1] if len(ph.assigned) >= m else float("nan")
        last = ph.assigned[-1] if ph.assigned else float("nan")
        drain = ph.done_at[-1] if ph.done_at else float("nan")
        lines += [
            "",
            f"Backlog: {k} customers requested with no notary online (submitted in"
            f" {submit_s:.2f} s), then {m} notaries came online at t=0:",
            "",
            f"- first {m} assignments (every notary busy) by t={first:.2f} s:"
            f" **{m / first:.1f} assignments/s**",
            f"- all {len(ph.assigned)} assignments by t={last:.2f} s:"
            f" {len(ph.assigned) / last:.1f} assignments/s (a notary holds one session at a"
            " time, so after the first wave this is the completion rate)",
            f"- completed: **{ph.completed}/{k}** by t={drain:.2f} s"
            f" ({ph.completed / drain * 60:.0f} per minute)",
            "",
        ]
        lines += harness.latency_table(
            "backlog request", [(kk, v) for kk, v in sorted(ph.stats.latencies.items()) if v]
        )
        lines += ["", f"CPU, first backlog request to last COMPLETED ({ph.notarized}):", ""]
        lines += cpu_lines(bcpu[0], bcpu[1], ph.notarized)
    lines += ["", "Failures (the server's first message of each kind in quotes):", ""]
    for label, st in [("back to back, warm-up and drain included", run.stats)] + (
        [("backlog", bl[0].stats)] if bl is not None else []
    ):
        lines += [f"- {label}: {'none' if not st.errors else ''}"]
        lines += [
            f"  - {k}: {v}" + (f' ("{st.examples[k][:160]}")' if st.examples.get(k) else "")
            for k, v in sorted(st.errors.items())
        ]
    lines += ["", f"Server exit status after SIGTERM: {exit_code}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=2000, help="idle connections held open")
    parser.add_argument("--pairs", type=int, default=20, help="notaries, and as many customers")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--backlog", type=int, default=100, help="requests queued (0: skip)")
    parser.add_argument("--backlog-timeout", type=float, default=300.0)
    parser.add_argument("--note", default="", help="a word on the machine's other load")
    harness.add_common_args(parser)
    args = parser.parse_args()
    harness.publish(args, "notarize-load", uvloop.run(main_async(args)))


if __name__ == "__main__":
    main()

"""The Matchmaker under a long queue (issue 15), against the ENF server as an
operator runs it (bench/harness.py: a child process over a scratch database).

    .venv/bin/python bench/matchmaker_bench.py [--waiting 10000] [--backlog 2000]
                                               [--notaries 20] [--probes 200]

(a) `session.request` reply latency with an empty queue, then with `--waiting`
    requests waiting (no notary online): `--probes` requests from one
    customer, one at a time, each cancelled right after its reply so the
    queue keeps its size. The queue is filled by `--connections` customers at
    a time, `--per-customer` requests each (under the default per-customer
    limit of 5); the fill's own latencies are reported by tenth of the queue.
(b) a second server: a `--backlog` of waiting requests, then `--notaries`
    notary clients come online; each accepts every offer at once and cancels
    the session right after (so it is free again): assignments per second
    from the first `presence.online` until the queue is empty.
`--scale`: the Matchmaker actor alone (no server, no Postgres) at the cluster's
sizes, 100,000 waiting and 10,000 notaries: the cost of each event, the memory.

The harness lifts the per-client limits (open requests, rates, connections
per user); this script lifts the per-user request rate too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enf_client import EnfClient, RequestFailed  # noqa: E402

from actors.actor import ActorContext  # noqa: E402
from actors.matchmaker import Matchmaker  # noqa: E402
from bench import harness  # noqa: E402
from config.settings import Settings  # noqa: E402
from core.ids import MATCHMAKER  # noqa: E402
from core.messages import Message  # noqa: E402
from gateway.auth import mint_token  # noqa: E402

EXTRA_ENV = {"ENF_USER_RATE_LIMIT": "1000000", "ENF_OUTBOX": "false"}
DOCUMENT = {"id": "d", "sha256": "a" * 64, "type": "affidavit", "title": "Affidavit"}


def customer(url: str, name: str) -> EnfClient:
    return EnfClient(url, mint_token(harness.SECRET, name, "customer", kyc=True))


async def request(c: EnfClient, key: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    sid = (await c.call("session.request", {"idempotency_key": key, "document": DOCUMENT}))[
        "session_id"
    ]
    return sid, time.perf_counter() - t0


async def settle(url: str) -> None:
    """Returns once the Matchmaker has handled everything sent to it so far:
    `notaries.available` is an ask through its mailbox, behind the enqueues."""
    async with customer(url, "settle") as c:
        while True:
            try:
                await c.call("notaries.available", {}, timeout=600)
                return
            except RequestFailed as exc:  # its mailbox is full: it is that far behind
                if exc.code != "unavailable":
                    raise
                await asyncio.sleep(1.0)


async def fill(url: str, prefix: str, n: int, per: int, conns: int) -> list[float]:
    """n waiting requests from n/per customers, `conns` at a time; the reply
    latency of each, in the order the requests were answered."""
    done: list[float] = []
    customers = iter(range((n + per - 1) // per))

    async def worker() -> None:
        for i in customers:
            async with customer(url, f"{prefix}{i}") as c:
                for k in range(min(per, n - i * per)):
                    done.append((await request(c, f"k{k}"))[1])

    await asyncio.gather(*(worker() for _ in range(conns)))
    return done


async def probe(url: str, name: str, n: int) -> list[float]:
    """n requests from one customer, one at a time, each cancelled after its reply."""
    out = []
    async with customer(url, name) as c:
        for k in range(n):
            sid, latency = await request(c, f"p{k}")
            out.append(latency)
            await c.call("session.cancel", {"session_id": sid, "reason": "bench probe"})
    return out


def tenths(values: list[float]) -> list[float]:
    size = max(1, len(values) // 10)
    return [statistics.median(values[i * size : (i + 1) * size]) * 1000 for i in range(10)]


async def queue_latency(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        harness.Scratch(args.database_url) as db,
        harness.Server(db.dsn, EXTRA_ENV) as server,
    ):
        url = server.url
        await probe(url, "warmup", 20)
        harness.say(f"(a) {args.probes} probes, empty queue")
        empty = await probe(url, "probe-empty", args.probes)
        harness.say(f"(a) filling the queue to {args.waiting}")
        t0 = time.perf_counter()
        filled = await fill(url, "q", args.waiting, args.per_customer, args.connections)
        fill_s = time.perf_counter() - t0
        await settle(url)
        settled_s = time.perf_counter() - t0
        if args.analyze:
            # What autovacuum does within a minute of such a burst: plans
            # (cached generic ones too) that count on the tables' new sizes.
            conn = await asyncpg.connect(db.dsn)
            try:
                await conn.execute("ANALYZE")
            finally:
                await conn.close()
        harness.say(f"(a) {args.probes} probes, {args.waiting} waiting")
        full = await probe(url, "probe-full", args.probes)
    return {
        "empty": empty,
        "full": full,
        "fill": filled,
        "fill_s": fill_s,
        "settled_s": settled_s,
    }


async def notary_loop(url: str, nid: str, state: dict[str, Any], done: asyncio.Event) -> None:
    async with EnfClient(url, mint_token(harness.SECRET, nid, "enp")) as c:
        await c.call("presence.online")
        await accept_and_cancel(c, state, done)


async def accept_and_cancel(c: EnfClient, state: dict[str, Any], done: asyncio.Event) -> None:
    while not done.is_set():
        try:
            offer = await c.expect("offer", timeout=600)
            await c.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
        except RequestFailed:
            state["refused"] += 1
            continue
        state["assigned"] += 1
        if state["assigned"] >= state["target"]:
            state["end"] = time.perf_counter()
            done.set()
        await c.call(
            "session.cancel", {"session_id": offer["data"]["session_id"], "reason": "bench"}
        )


async def drain(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        harness.Scratch(args.database_url) as db,
        harness.Server(db.dsn, EXTRA_ENV) as server,
    ):
        http_url = f"http://127.0.0.1:{server.port}"
        admin = mint_token(harness.SECRET, "bench-admin", "admin")
        notaries = [f"mn{j}" for j in range(args.notaries)]
        async with aiohttp.ClientSession() as http:
            for nid in notaries:
                body = {"name": nid, "tariff": 100.0, "commission_expires": "2035-01-01"}
                headers = {"Authorization": f"Bearer {admin}"}
                async with http.put(
                    f"{http_url}/v1/notaries/{nid}", json=body, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()
        harness.say(f"(b) a backlog of {args.backlog}")
        await fill(server.url, "b", args.backlog, args.per_customer, args.connections)
        await settle(server.url)
        harness.say(f"(b) {args.notaries} notaries drain it")
        state: dict[str, Any] = {"assigned": 0, "refused": 0, "target": args.backlog}
        done = asyncio.Event()
        start = time.perf_counter()
        tasks = [asyncio.create_task(notary_loop(server.url, n, state, done)) for n in notaries]
        try:
            await asyncio.wait_for(done.wait(), args.drain_timeout)
        except TimeoutError:
            state["end"] = time.perf_counter()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        state["seconds"] = state["end"] - start
    return state


def report(args: argparse.Namespace, a: dict[str, Any], b: dict[str, Any]) -> str:
    empty, full = statistics.median(a["empty"]) * 1000, statistics.median(a["full"]) * 1000
    rate = b["assigned"] / b["seconds"]
    options = [
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k not in ("database_url", "out") and not k.startswith("scale")
    ]
    cmd = " ".join(["bench/matchmaker_bench.py", *options])
    lines = [
        "## Matchmaker under a long queue (bench/matchmaker_bench.py, issue 15)",
        "",
        f"Run on {harness.machine()}, Python {sys.version.split()[0]}; the load generator,"
        " the server and Postgres share the two cores (loopback). Reproduce (Postgres at"
        " the URL, a scratch database is created and dropped):",
        "",
        f"    .venv/bin/python {cmd}",
        "",
        "Per-client limits lifted for the run (`ENF_MAX_OPEN_REQUESTS`, `ENF_RATE_LIMIT`,"
        " `ENF_USER_RATE_LIMIT`, connections per user, HTTP rates); still, every customer"
        f" holds at most {args.per_customer} waiting requests. `ENF_OUTBOX=false`.",
        "",
        f"(a) `session.request` reply latency, {args.probes} requests from one customer one"
        " at a time, each cancelled after its reply (no notary online):",
        "",
        *harness.latency_table(
            "queue", [("empty", a["empty"]), (f"{args.waiting:,} waiting", a["full"])]
        ),
        "",
        f"- median with {args.waiting:,} waiting / median with an empty queue:"
        f" **{full / empty:.2f}x** (target <= 1.5x)",
        f"- filling the queue ({args.connections} customers at a time): {a['fill_s']:.1f} s"
        f" ({args.waiting / a['fill_s']:,.0f} requests/s); the Matchmaker had handled every"
        f" enqueue {a['settled_s'] - a['fill_s']:.1f} s after the last reply",
        "- the fill's reply latency, median ms by tenth of the queue (first to last): "
        + ", ".join(f"{v:.1f}" for v in tenths(a["fill"])),
        "",
        f"(b) a backlog of {args.backlog:,} waiting requests, then {args.notaries} notaries"
        " that accept every offer at once and cancel the session right after:",
        "",
        f"- **{rate:,.0f} assignments/s** ({b['assigned']:,} in {b['seconds']:.1f} s, from the"
        " first `presence.online` to the last accept; target >= 200/s);"
        f" {b['refused']} accepts refused",
    ]
    return "\n".join(lines) + "\n"


# -- the data structures alone, at the cluster's sizes ----------------------------------


class StubHost:
    """Every notary takes every offer; nothing else answers anything."""

    async def ask(self, actor_id: str, msg: Message, timeout: float = 30.0) -> Any:
        return {"ok": True} if msg.kind == "hold_offer" else {}

    def tell(self, actor_id: str, msg: Message) -> None:
        return None


def stub_matchmaker() -> Matchmaker:
    ctx = SimpleNamespace(host=StubHost(), settings=Settings(), metrics=None)
    return Matchmaker(MATCHMAKER, cast(ActorContext, ctx))


def request_data(rnd: random.Random, i: int) -> dict[str, Any]:
    return {
        "created_at": f"2026-01-01T00:00:00.{i:07d}Z",
        "document_type": rnd.choice(["affidavit", "deed", "contract"]),
        "price_preference": rnd.choice([None, 300.0, 500.0]),
        "location": {"lat": 14.6 + rnd.random(), "lng": 121.0 + rnd.random()},
    }


def notary_update(rnd: random.Random, nid: str, offerable: bool = True) -> Message:
    profile = {
        "rating": rnd.uniform(3, 5),
        "tariff": rnd.choice([300.0, 500.0, 800.0]),
        "specializations": [rnd.choice(["affidavit", "deed", "contract"])],
        "location": {"lat": 14.6 + rnd.random(), "lng": 121.0 + rnd.random()},
    }
    data = {
        "notary_id": nid,
        "status": "available" if offerable else "busy",
        "offerable": offerable,
        "available_since": rnd.random(),
        "profile": profile,
    }
    return Message("notary_update", data)


async def timed(step: Any) -> float:
    t0 = time.perf_counter()
    await step
    return time.perf_counter() - t0


async def enqueue(mm: Matchmaker, session_id: str, data: dict[str, Any]) -> None:
    """`enqueue` past its database read (the session is known to wait)."""
    await mm._add_pending(session_id, data)
    await mm._match()


async def scale(args: argparse.Namespace) -> dict[str, Any]:
    """One Matchmaker with `--scale-waiting` waiting and `--scale-notaries`
    notaries, without Postgres: the cost of each event and the memory."""
    rnd, mm = random.Random(15), stub_matchmaker()
    out: dict[str, Any] = {}
    waiting, notaries = args.scale_waiting, args.scale_notaries
    tracemalloc.start()
    out["enqueue_empty"] = [
        await timed(enqueue(mm, f"s{i}", request_data(rnd, i))) for i in range(waiting)
    ]
    out["online"] = [
        await timed(mm.on_notary_update(notary_update(rnd, f"n{j}"))) for j in range(notaries)
    ]
    out["memory_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    out["enqueue_full"] = [
        await timed(enqueue(mm, f"t{i}", request_data(rnd, waiting + i))) for i in range(1000)
    ]
    cycles = []
    for j in range(min(1000, notaries, waiting)):  # a decline, then offerable again
        nid = f"n{j}"
        offer_id = next(iter(mm.book.holding[nid]))
        sid = mm.book.offers[offer_id][0]
        data = {"offer_id": offer_id, "session_id": sid, "notary_id": nid, "outcome": "declined"}
        t0 = time.perf_counter()
        await mm.on_offer_resolved(Message("offer_resolved", data))
        await mm.on_notary_update(notary_update(rnd, nid))
        cycles.append(time.perf_counter() - t0)
    out["decline"] = cycles
    mm.cancel_all_timers()
    # All notaries available, the queue empty: each request ranks all of them.
    mm = stub_matchmaker()
    for j in range(notaries):
        await mm.on_notary_update(notary_update(rnd, f"n{j}"))
    out["enqueue_available"] = [
        await timed(enqueue(mm, f"u{i}", request_data(rnd, i))) for i in range(200)
    ]
    mm.cancel_all_timers()
    return out


def scale_report(args: argparse.Namespace, out: dict[str, Any]) -> str:
    rows = [
        (f"enqueue, queue filling to {args.scale_waiting:,}, no notary", out["enqueue_empty"]),
        (
            f"a notary comes online ({args.scale_notaries:,}), each offered the oldest",
            out["online"],
        ),
        ("enqueue, all notaries holding offers", out["enqueue_full"]),
        ("a decline, then the notary offerable again (2 events)", out["decline"]),
        (f"enqueue, {args.scale_notaries:,} notaries available", out["enqueue_available"]),
    ]
    lines = [
        "## Matchmaker data structures at the cluster's sizes (bench/matchmaker_bench.py --scale)",
        "",
        f"Run on {harness.machine()}, Python {sys.version.split()[0]}; one process, no server,"
        " no Postgres: the Matchmaker actor with a stand-in host whose notaries take every"
        " offer (its `enqueue` past the database read).",
        "",
        "    .venv/bin/python bench/matchmaker_bench.py --scale"
        f" --scale-waiting {args.scale_waiting} --scale-notaries {args.scale_notaries}",
        "",
        *harness.latency_table("event", rows),
        "",
        f"- memory of the Matchmaker with {args.scale_waiting:,} waiting and"
        f" {args.scale_notaries:,} notaries holding offers (tracemalloc):"
        f" {out['memory_mb']:.0f} MB",
    ]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> str:
    if args.scale:
        return scale_report(args, await scale(args))
    a = await queue_latency(args)
    b = await drain(args)
    return report(args, a, b)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=2_000)
    parser.add_argument("--notaries", type=int, default=20)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--per-customer", type=int, default=4)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--scale", action="store_true", help="the data structures alone")
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE after the fill (as autovacuum would)"
    )
    parser.add_argument("--scale-waiting", type=int, default=100_000)
    parser.add_argument("--scale-notaries", type=int, default=10_000)
    harness.add_common_args(parser)
    args = parser.parse_args()
    text = uvloop.run(main_async(args))
    harness.publish(args, "matchmaker-scale" if args.scale else "matchmaker", text)


if __name__ == "__main__":
    main()

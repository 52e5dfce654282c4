"""Delivery benchmark: events per second the delivery worker hands to a fast
local webhook receiver, and the latency the outbox adds to a session request
(the same request on a server with ENF_OUTBOX=false), in one run.

    .venv/bin/python bench/delivery_bench.py [--events 5000] [--streams 500]
                                             [--requests 300] [--clients 10]

Writes the deliveries section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import uvloop
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enf_client import EnfClient  # noqa: E402

from bench import harness  # noqa: E402
from gateway.auth import mint_token  # noqa: E402
from persistence.migrate import apply_migrations  # noqa: E402

WEBHOOK_SECRET = "bench-webhook-secret-0123456789"


async def seed(dsn: str, events: int, streams: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
        rows = []
        for i in range(events):
            sid = f"bench-{i % streams}"
            eid = str(uuid.uuid4())
            payload = {
                "id": eid,
                "type": "payment.hold",
                "session_id": sid,
                "seq": i // streams + 1,
                "occurred_at": "2026-11-24T00:00:00.000Z",
                "data": {"amount": 500.0, "platform_fee": 100.0, "enp_fee": 400.0},
            }
            rows.append(
                (eid, f"webhook:{sid}", sid, "webhook", "payment.hold", json.dumps(payload))
            )
        await conn.executemany(
            "INSERT INTO outbox (id, stream, session_id, destination, type, payload)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
            rows,
        )
    finally:
        await conn.close()


async def throughput(url: str, events: int, streams: int) -> tuple[float, float, int]:
    """Seconds to deliver `events` seeded rows; and requests the receiver saw."""
    got: set[str] = set()
    seen = 0
    done = asyncio.Event()
    first: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        if not first:
            first.append(time.monotonic())
        got.add(request.headers["X-ENF-Event-Id"])
        if len(got) >= events:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = harness.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with harness.Scratch(url) as db:
            await seed(db.dsn, events, streams)
            env = {
                "ENF_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
                "ENF_WEBHOOK_SECRET": WEBHOOK_SECRET,
            }
            t0 = time.monotonic()
            async with harness.Server(db.dsn, env):
                await asyncio.wait_for(done.wait(), 300)
                elapsed = time.monotonic() - t0
                flowing = time.monotonic() - first[0]
    finally:
        await runner.cleanup()
    return elapsed, flowing, seen


async def request_latency(url: str, outbox: bool, requests: int, clients: int) -> list[float]:
    lat: list[float] = []
    async with (
        harness.Scratch(url) as db,
        harness.Server(db.dsn, {"ENF_OUTBOX": "true" if outbox else "false"}) as server,
    ):
        cs = [
            EnfClient(server.url, mint_token(harness.SECRET, f"lc{i}", "customer", kyc=True))
            for i in range(clients)
        ]
        for c in cs:
            await c.connect()

        async def one(i: int, c: EnfClient) -> None:
            for k in range(requests // clients):
                data = {
                    "idempotency_key": f"{i}-{k}",
                    "document": {"id": "d", "sha256": "a" * 64, "type": "affidavit", "title": "t"},
                }
                t0 = time.perf_counter()
                await c.call("session.request", data)
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(cs)))
        for c in cs:
            await c.close()
    return lat


async def main_async(args: argparse.Namespace) -> str:
    url = args.database_url
    harness.say(f"throughput: {args.events} events over {args.streams} sessions")
    elapsed, flowing, seen = await throughput(url, args.events, args.streams)
    harness.say(f"  {args.events / flowing:,.0f} events/s once flowing")
    harness.say("latency: session.request with the outbox, then without")
    with_outbox = await request_latency(url, True, args.requests, args.clients)
    without = await request_latency(url, False, args.requests, args.clients)
    added = harness.pct(with_outbox, 0.5) - harness.pct(without, 0.5)
    lines = [
        "## Deliveries (bench/delivery_bench.py)",
        "",
        f"Run on {harness.machine()}, server, receiver and clients on one machine. Reproduce:",
        "",
        f"    .venv/bin/python bench/delivery_bench.py --events {args.events} --streams "
        f"{args.streams} --requests {args.requests} --clients {args.clients}",
        "",
        f"- **Delivery throughput**: {args.events:,} signed webhook events, seeded in the"
        f" outbox over {args.streams} sessions (order kept per session), delivered to a"
        f" local aiohttp receiver answering 204: **{args.events / flowing:,.0f} events/s**"
        f" from the first delivery to the last ({flowing:.1f} s; {elapsed:.1f} s from"
        f" starting the server), {seen:,} requests for {args.events:,} events.",
        "",
        f"- **Latency the outbox adds** to `session.request` (which commits one outbox row"
        f" with its journal event), {args.clients} clients, {args.requests} requests each"
        " run, same machine:",
        "",
        *harness.latency_table(
            "server", [("outbox on", with_outbox), ("`ENF_OUTBOX=false`", without)]
        ),
        "",
        f"Added at the median: **{added:.2f} ms** (the row"
        " travels in the same statement as the journal rows; delivery is off the request"
        " path).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=10)
    harness.add_common_args(parser)
    args = parser.parse_args()
    harness.publish(args, "deliveries", uvloop.run(main_async(args)))


if __name__ == "__main__":
    main()

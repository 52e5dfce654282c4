"""Cluster mode (ENF_CLUSTER=ray) against the single-node host and a bare
aiohttp echo server, in the same run.

    .venv/bin/python bench/cluster_bench.py [--connections 50] [--seconds 5]
        [--sessions 10000] [--database-url postgresql://postgres@127.0.0.1:5432/test]
        [--redis-url redis://127.0.0.1:6379/0] [--ray-address HOST:PORT]

Without --ray-address (or RAY_ADDRESS) it starts a Ray head on loopback for
the run and stops it afterwards. Writes the `cluster` section of
bench/RESULTS.md. Measures:
  read round trips   `session.join` at the head (a read through the session
                     actor), N connections, one request in flight each:
                     echo, the local host, the Ray host batched (one Ray call
                     per shard per tick) and unbatched (one Ray call per request)
  density            one shard process hosting --sessions idle sessions:
                     its resident memory before and after, per hosted actor
  re-activation      SIGKILL of that shard process: time until Ray restarted
                     it and all its sessions are active again from the journal
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from gateway.auth import mint_token  # noqa: E402


def cluster_env(ray_address: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENF_CLUSTER": "ray",
        "ENF_RAY_ADDRESS": ray_address,
        "ENF_RAY_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}",
        "ENF_REDIS_URL": redis_url,
        "ENF_USER_RATE_LIMIT": "1000000",
        "ENF_MAX_OPEN_REQUESTS": "1000000",
        "ENF_MAX_CONNECTIONS_PER_USER": "1000000",
        "ENF_HTTP_USER_RATE_LIMIT": "1000000",
        **extra,
    }


async def kill_namespace(env: dict[str, str], shards: int) -> None:
    from cluster.raycluster import kill_shards

    await kill_shards(env["ENF_RAY_NAMESPACE"], shards)


async def read_round_trips(
    http: aiohttp.ClientSession, name: str, url: str, n: int, seconds: float
) -> harness.Result:
    sessions, _, cust_tokens, keep = await harness.prepare_sessions(url, n)
    socks = await harness.connect_many(http, url, cust_tokens)
    heads = await harness.join_heads(socks, sessions)
    result = await harness.drive(name, socks, harness.join_frame(sessions, heads), seconds)
    await harness.close_all(socks, keep)
    return result


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def shard_info(namespace: str) -> dict[str, Any]:
    import ray

    from cluster.raycluster import shard_name

    info: dict[str, Any] = await ray.get_actor(shard_name(0), namespace=namespace).info.remote()
    return info


async def make_sessions(http: aiohttp.ClientSession, url: str, total: int) -> None:
    """`total` sessions in REQUESTED (no notary online), 50 customers in parallel."""
    per = 50
    counts = [total // per + (1 if i < total % per else 0) for i in range(per)]

    async def customer(i: int, count: int) -> None:
        tok = mint_token(harness.SECRET, f"dens{i}", "customer", kyc=True)
        ws = await http.ws_connect(
            url, protocols=("enf.v1.json",), headers={"Authorization": f"Bearer {tok}"}
        )
        await ws.receive()  # welcome
        for k in range(count):
            rid = f"r{k}"
            frame = {
                "id": rid,
                "type": "session.request",
                "data": {
                    "idempotency_key": f"k{k}",
                    "document": {"id": f"d{k}", "sha256": "b" * 64, "type": "deed", "title": "t"},
                },
            }
            await ws.send_str(json.dumps(frame))
            while True:
                body = json.loads((await ws.receive()).data)
                if body.get("re") == rid:
                    if not body.get("ok"):
                        raise RuntimeError(body)
                    break
        await ws.close()

    await asyncio.gather(*(customer(i, c) for i, c in enumerate(counts)))


async def density_and_reactivation(
    http: aiohttp.ClientSession, url: str, namespace: str, total: int
) -> dict[str, float]:
    import ray

    info = await shard_info(namespace)
    before = rss_bytes(info["pid"])
    actors_before = info["actors"]
    started = time.monotonic()
    harness.say(f"creating {total} sessions on one shard")
    await make_sessions(http, url, total)
    created_s = time.monotonic() - started
    await asyncio.sleep(2)  # let the allocator settle
    info = await shard_info(namespace)
    after = rss_bytes(info["pid"])
    hosted = info["actors"] - actors_before
    harness.say(f"shard {info['pid']} hosts {info['actors']} actors; killing it")
    os.kill(info["pid"], signal.SIGKILL)
    killed = time.monotonic()
    restarted_at = reactivated_at = 0.0
    while time.monotonic() - killed < 600:
        try:
            now = await asyncio.wait_for(shard_info(namespace), 5)
        except Exception:
            await asyncio.sleep(0.2)
            continue
        if now["pid"] != info["pid"]:
            restarted_at = restarted_at or time.monotonic()
            if now["actors"] >= hosted:
                reactivated_at = time.monotonic()
                break
        await asyncio.sleep(0.2)
    del ray
    return {
        "sessions": float(total),
        "hosted": float(hosted),
        "rss_before": float(before),
        "rss_after": float(after),
        "per_actor": (after - before) / max(1, hosted),
        "create_s": created_s,
        "restart_s": restarted_at - killed if restarted_at else float("nan"),
        "reactivate_s": reactivated_at - killed if reactivated_at else float("nan"),
    }


async def main_async(args: argparse.Namespace) -> tuple[list[harness.Result], dict[str, float]]:
    from cluster.raycluster import connect_ray
    from config.settings import Settings

    n, secs = args.connections, args.seconds
    from cluster.ops import LocalRayHead

    head = None if args.ray_address else LocalRayHead()
    ray_address = args.ray_address or head.start()  # type: ignore[union-attr]
    connect_ray(Settings(ray_address=ray_address, ray_namespace="bench"))
    echo_port = harness.free_port()
    echo = harness.start_yardstick("echo", echo_port)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    results: list[harness.Result] = []
    density: dict[str, float] = {}
    try:
        results.append(await harness.echo_round_trips(http, echo_port, n, secs))
        async with harness.Scratch(args.database_url) as db, harness.Server(db.dsn) as server:
            results.append(await read_round_trips(http, "local host", server.url, n, secs))
        for label, batch in (("Ray host, batched", "true"), ("Ray host, unbatched", "false")):
            env = cluster_env(
                ray_address, args.redis_url, ENF_SHARDS=str(args.shards), ENF_RAY_BATCH=batch
            )
            async with (
                harness.Scratch(args.database_url) as db,
                harness.Server(db.dsn, env) as server,
            ):
                try:
                    results.append(await read_round_trips(http, label, server.url, n, secs))
                finally:
                    await kill_namespace(env, args.shards)
        if args.sessions:
            env = cluster_env(
                ray_address, args.redis_url, ENF_SHARDS="1", ENF_REQUEST_TTL_S="86400"
            )
            async with (
                harness.Scratch(args.database_url) as db,
                harness.Server(db.dsn, env) as server,
            ):
                try:
                    density = await density_and_reactivation(
                        http, server.url, env["ENF_RAY_NAMESPACE"], args.sessions
                    )
                finally:
                    await kill_namespace(env, 1)
    finally:
        await http.close()
        if echo.poll() is None:
            echo.kill()
        if head is not None:
            head.stop()
    return results, density


def report(
    results: list[harness.Result], density: dict[str, float], args: argparse.Namespace
) -> str:
    by = {r.name: r for r in results}
    echo, local = by["echo (bare aiohttp)"], by["local host"]
    lines = [
        "## Cluster mode (bench/cluster_bench.py)",
        "",
        f"Run on {harness.machine()}, "
        f"Python {platform.python_version()}; gateway, {args.shards} shard processes, Ray, "
        "Redis, Postgres and the load generator on one machine over loopback.",
        "",
        "Reproduce:",
        "",
        f"    .venv/bin/python bench/cluster_bench.py --connections {args.connections} "
        f"--seconds {args.seconds} --sessions {args.sessions}",
        "",
        f"Actor read (`session.join` at the head), {args.connections} connections, one "
        f"request in flight each, {args.seconds} s after 1 s of warm-up:",
        "",
        "| host | round trips/s | p50 ms | p99 ms | vs bare echo | vs local host |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.rate:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} "
            f"| {r.rate / echo.rate:.2f}x | {r.rate / local.rate:.2f}x |"
        )
    batched, unbatched = by.get("Ray host, batched"), by.get("Ray host, unbatched")
    lines += ["", "Targets:", ""]
    if batched:
        lines.append(
            f"- batched Ray path / local host: **{batched.rate / local.rate:.2f}x** "
            "(target >= 0.3x)"
        )
    if batched and unbatched:
        lines.append(
            f"- batching: **{batched.rate / unbatched.rate:.2f}x** the unbatched Ray path "
            f"({unbatched.rate / local.rate:.3f}x the local host)"
        )
    if density:
        kb = density["per_actor"] / 1024
        lines += [
            f"- memory per idle hosted session actor: **{kb:.1f} KB** (target <= 10 KB): one "
            f"shard process went from {density['rss_before'] / 2**20:.0f} MB to "
            f"{density['rss_after'] / 2**20:.0f} MB resident hosting "
            f"{density['hosted']:,.0f} more actors",
            f"- re-activation after SIGKILL of that shard: Ray restarted it in "
            f"{density['restart_s']:.1f} s; all {density['hosted']:,.0f} sessions were active "
            f"again after **{density['reactivate_s']:.1f} s**",
            f"- (creating the {density['sessions']:,.0f} sessions over 50 connections took "
            f"{density['create_s']:.1f} s)",
        ]
    lines += ["", "What the figures mean: `docs/cluster.md`, Performance."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("ENF_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"))
    harness.add_common_args(parser)
    args = parser.parse_args()
    results, density = uvloop.run(main_async(args))
    harness.publish(args, "cluster", report(results, density, args))


if __name__ == "__main__":
    main()

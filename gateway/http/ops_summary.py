"""`GET /v1/ops/summary` (admins): what the console's ops page shows.

- `queue`: the requests waiting for a notary (and the oldest one's wait),
  the offers open, the notaries online by presence status (the
  Matchmaker's list; null when it does not answer within 2 s), and the match
  latency (REQUESTED to ENP_ASSIGNED) of the last hour's assignments, from
  Postgres (persistence.queue_stats says why not the in-memory histogram).
- `sessions_by_state`: every state of PROTOCOL §5 with its count (the query
  `/metrics` uses).
- `cluster`: null on a single node; in cluster mode the shard map (count,
  epoch), each shard as this gateway last saw it (its look every 5 s, as
  `/metrics` shows it: node, epoch, actors hosted, state as `run.py cluster
  status` names it, or UNAVAILABLE when it did not answer), and the live
  gateways from the Redis registry; what could not be read is in `errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from actors import lifecycle as L
from cluster.ops import shard_state
from cluster.redisbus import RedisBus
from cluster.registry import live_gateways
from core.clock import now_iso
from gateway.http.access import identify, services_of
from gateway.scrape import notaries_online
from gateway.services import Services
from persistence import queue_stats, stats
from persistence.shardmap import load_map

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

LATENCY_WINDOW_S = 3600.0


@routes.get("/v1/ops/summary")
async def ops_summary(request: web.Request) -> web.Response:
    identify(request, "admin")
    services = services_of(request)
    pool = services.pool
    states = await stats.sessions_by_state(pool)
    offers = await stats.offers_by_state(pool)
    waiting = await queue_stats.requests_waiting(pool)
    latency = await queue_stats.match_latency(pool, LATENCY_WINDOW_S)
    queue = {
        "requests_waiting": waiting.requests,
        "oldest_request_s": waiting.oldest_s,
        "offers_open": offers.get("open", 0),
        "notaries_online": await notaries_online(services),
        "match_latency": {
            "window_s": latency.window_s,
            "count": latency.count,
            "median_s": latency.median_s,
            "p95_s": latency.p95_s,
            "max_s": latency.max_s,
        },
    }
    cluster = await _cluster(services) if services.settings.cluster == "ray" else None
    return web.json_response(
        {
            "at": now_iso(),
            "queue": queue,
            "sessions_by_state": {st: states.get(st, 0) for st in L.STATES},
            "cluster": cluster,
        }
    )


async def _cluster(services: Services) -> dict[str, Any]:
    errors: list[str] = []
    figures = services.host.shard_figures()
    try:
        shard_map = await load_map(services.pool)
    except LookupError as exc:
        return {
            "map_epoch": None,
            "shard_count": 0,
            "shards": [],
            "gateways": [],
            "errors": [str(exc)],
        }
    shards = []
    for k in range(shard_map.count):
        info = figures.get(k)
        if info is None:
            state = "UNKNOWN"  # not looked at yet
        elif not info.get("up"):
            state = "UNAVAILABLE"
        else:
            state = shard_state(info, shard_map)
        shards.append(
            {
                "shard": k,
                "state": state,
                "placement": shard_map.nodes[k] if k < len(shard_map.nodes) else None,
                "node_id": (info or {}).get("node_id"),
                "epoch": (info or {}).get("epoch"),
                "actors": (info or {}).get("actors"),
                "mailbox_total": (info or {}).get("mailbox_total"),
            }
        )
    return {
        "map_epoch": shard_map.epoch,
        "shard_count": shard_map.count,
        "shards": shards,
        "gateways": await _gateways(services, errors),
        "errors": errors,
    }


async def _gateways(services: Services, errors: list[str]) -> list[dict[str, Any]]:
    """The live gateways of the Redis registry (`run.py cluster status`'s)."""
    if not isinstance(services.bus, RedisBus):
        return []
    try:
        async with asyncio.timeout(2):
            found = await live_gateways(services.bus.client)
    except Exception as exc:
        errors.append(f"gateways unknown: Redis unavailable: {exc}")
        return []
    now = time.time()
    return [
        {
            "gateway_id": gid,
            "url": g.get("url"),
            "host": g.get("host"),
            "pid": g.get("pid"),
            "connections": g.get("connections"),
            "seen_s_ago": round(max(0.0, now - float(g.get("at", now))), 1),
        }
        for gid, g in sorted(found.items())
    ]

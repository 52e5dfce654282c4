"""Probes: `/health` (the process answers), `/ready` (its database, Redis and
Ray answer, and it is not shutting down), `/metrics` (Prometheus). None of
them is rate limited (gateway.http.limiting): orchestrators and Prometheus
poll them, often from one address."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.http.access import services_of
from gateway.scrape import refresh_metrics
from persistence import locks

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    services = services_of(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(locks.ping(services.pool), 2.0)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if services.settings.cluster == "ray":
        # What needs Redis (events, presence) says so; requests still work.
        checks["redis"] = getattr(services.bus, "status", "ok")
        checks["ray"] = await services.host.health()
    elif services.settings.redis_url:
        checks["redis"] = await _redis_check(services.settings.redis_url)
    ok = all(v == "ok" for v in checks.values()) and not services.shutting_down
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    services = services_of(request)
    await refresh_metrics(services)
    return web.Response(
        body=services.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _redis_check(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        await asyncio.wait_for(client.ping(), 1.5)
        return "ok"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    finally:
        await client.aclose()

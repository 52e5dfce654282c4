"""The composition root: the aiohttp application, its routes, and the
resources of the mode it runs in (gateway.single_node or gateway.cluster_node),
opened and closed by one `cleanup_ctx` generator, in order. On shutdown,
sockets are closed with 1001 before the actors are snapshotted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from config.settings import Settings
from gateway import protocol as P
from gateway.cluster_node import cluster_resources
from gateway.heartbeat import Heartbeat
from gateway.http import asyncapi, docs, front_middleware, routes
from gateway.services import SERVICES
from gateway.single_node import local_resources
from gateway.ws import ws_handler

logger = logging.getLogger(__name__)


STATIC = Path(__file__).resolve().parent / "static"


async def console_index(request: web.Request) -> web.FileResponse:
    """The web console (plain HTML and JavaScript, no build step)."""
    return web.FileResponse(STATIC / "index.html")


def server_options(settings: Settings) -> dict[str, Any]:
    """Options of aiohttp's connection handler, whoever runs the app (run.py,
    the tests' server). aiohttp has no separate header timeout: its
    keep-alive timer runs from the moment a connection opens (and again
    after each response) until a whole request head has arrived, and drops
    the connection when it fires. So ENF_HEADER_TIMEOUT_S bounds both how
    long a client may take to send a request line and headers (slowloris)
    and how long an idle keep-alive connection is kept; it does not apply
    while a request is handled (a WebSocket stays open)."""
    return {"keepalive_timeout": settings.header_timeout_s}


def create_app(
    settings: Settings, dsn: str, jwt_secret: str, *, migrate: bool = True
) -> web.Application:
    app = web.Application(
        middlewares=[front_middleware],
        client_max_size=P.MAX_FRAME,
        handler_args=server_options(settings),
    )
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_routes(routes)
    app.router.add_routes(asyncapi.routes)  # GET /asyncapi.json: the WebSocket's document
    app.router.add_routes(docs.routes)  # GET /docs (Swagger UI) and its files
    app.router.add_get("/", console_index)
    app.router.add_static("/console/", STATIC, show_index=False)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if settings.cluster == "ray":
            async for _ in cluster_resources(app, settings, dsn, jwt_secret, migrate):
                yield
            return
        async for _ in local_resources(app, settings, dsn, jwt_secret, migrate):
            yield

    async def close_sockets(app: web.Application) -> None:
        services = app.get(SERVICES)
        if services is None:
            return
        services.shutting_down = True  # new requests are refused from here on
        conns = list(services.connections)
        in_flight = [t for c in conns for t in c.in_flight()]
        if in_flight:
            logger.info("letting %d requests in flight finish", len(in_flight))
            await asyncio.wait(in_flight, timeout=3.0)
        for c in conns:
            await c.drain(0.5)
        if conns:
            logger.info("closing %d connections (1001)", len(conns))
        await asyncio.gather(
            *(c.ws.close(code=P.CLOSE_GOING_AWAY, message=b"server shutting down") for c in conns),
            return_exceptions=True,
        )

    async def heartbeat(app: web.Application) -> AsyncIterator[None]:
        beat = Heartbeat(settings.heartbeat_s, app[SERVICES].connections)
        beat.start()
        yield
        await beat.stop()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(heartbeat)
    app.on_shutdown.append(close_sockets)
    return app

"""The aiohttp application: wiring of pool, journal, actor host, bus and routes.

Resources are opened and closed by one `cleanup_ctx` generator, in order; on
shutdown, sockets are closed with 1001 before the actors are snapshotted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from aiohttp import web

from actors.bus import LocalBus
from actors.kinds import ACTOR_KINDS
from actors.localhost import LocalHost
from actors.recovery import recover
from cluster.leases import PresenceLeases
from cluster.ratelimit import ClusterRateLimit
from cluster.raycluster import settings_payload
from cluster.rayhost import RayHost
from cluster.rayrecorder import ensure_recorders
from cluster.redisbus import RedisBus
from cluster.registry import GatewayRegistry
from config.settings import Settings
from delivery.leader import DeliveryLeader
from delivery.senders import SmsSender, WebhookSender
from delivery.worker import DeliveryWorker, Sender
from gateway import protocol as P
from gateway.http_api import audit_middleware, errors_middleware, routes
from gateway.metrics import Metrics
from gateway.services import SERVICES, Services
from gateway.ws import ws_handler
from media.recorder import RecorderService
from media.storage import storage_for
from media.twilio_video import Credentials, TwilioVideo
from persistence.audit import AuditLog
from persistence.journal import Journal
from persistence.keys import Keys
from persistence.migrate import apply_migrations
from persistence.pool import create_pool

logger = logging.getLogger(__name__)


STATIC = Path(__file__).resolve().parent / "static"


async def console_index(request: web.Request) -> web.FileResponse:
    """The web console (plain HTML and JavaScript, no build step)."""
    return web.FileResponse(STATIC / "index.html")


def make_delivery_worker(
    settings: Settings, pool: asyncpg.Pool, keys: Keys, host: LocalHost | RayHost
) -> DeliveryWorker:
    senders: dict[str, Sender | None] = {"webhook": None, "sms": None}
    why = {
        "webhook": "ENF_WEBHOOK_URL is not set: the event waits in the outbox",
        "sms": SmsSender.missing() or "",
    }
    if settings.webhook_url:
        if not settings.webhook_secret:
            raise ValueError("ENF_WEBHOOK_URL needs ENF_WEBHOOK_SECRET (the HMAC key)")
        senders["webhook"] = WebhookSender(
            settings.webhook_url, settings.webhook_secret, keys.pii, settings.delivery_timeout_s
        )
    if not why["sms"]:
        senders["sms"] = SmsSender(keys.pii, settings.twilio_api_base)
    return DeliveryWorker(
        pool,
        senders,
        host.tell,
        max_attempts=settings.delivery_max_attempts,
        base_s=settings.delivery_base_s,
        cap_s=settings.delivery_cap_s,
        why_missing=why,
        breaker=(settings.breaker_threshold, settings.breaker_cooldown_s),
    )


def create_app(
    settings: Settings, dsn: str, jwt_secret: str, *, migrate: bool = True
) -> web.Application:
    app = web.Application(
        middlewares=[audit_middleware, errors_middleware], client_max_size=P.MAX_FRAME
    )
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_routes(routes)
    app.router.add_get("/", console_index)
    app.router.add_static("/console/", STATIC, show_index=False)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if settings.cluster == "ray":
            async for _ in cluster_resources(app, settings, dsn, jwt_secret, migrate):
                yield
            return
        keys = Keys.load(settings.signing_key_file, settings.pii_key_file, settings.data_dir)
        pool = await create_pool(dsn, max_size=settings.db_pool_size)
        if migrate:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
        journal = Journal(
            pool, writers=settings.journal_writers, max_batch=settings.journal_max_batch
        )
        await journal.start()
        bus = LocalBus()
        media: RecorderService | None = None
        storage = storage_for(settings.recordings_location, settings.s3_endpoint_url)
        if settings.recording != "off" and settings.video_provider == "webrtc":
            media = RecorderService(
                settings.data_dir / "recorder",
                storage,
                lambda actor, msg: host.tell(actor, msg),
            )
        video: TwilioVideo | None = None
        if settings.video_provider == "twilio":
            base = settings.public_url or f"http://{settings.host}:{settings.port}"
            video = TwilioVideo(
                Credentials.from_env(),
                storage,
                lambda actor, msg: host.tell(actor, msg),
                settings.data_dir / "twilio",
                callback_url=base.rstrip("/") + "/webhooks/twilio/status",
                api_base=settings.twilio_api_base,
            )
        metrics = Metrics()
        host = LocalHost(settings, journal, bus, ACTOR_KINDS, keys, media, video, metrics=metrics)
        await host.start()
        journal.on_batch = metrics.observe_batch
        audit = AuditLog(pool)
        await audit.start()
        deliveries = make_delivery_worker(settings, pool, keys, host)
        journal.on_outbox = deliveries.wake
        await deliveries.start()
        services = Services(
            settings,
            jwt_secret,
            pool,
            journal,
            bus,
            host,
            keys,
            audit,
            storage,
            media,
            video,
            deliveries,
            metrics,
        )
        app[SERVICES] = services
        await recover(host, journal)
        try:
            yield
        finally:
            services.shutting_down = True
            if media is not None:
                await media.stop()
            if video is not None:
                await video.stop()
            await host.stop()
            await deliveries.stop()
            await journal.stop()
            await audit.stop()
            await close_pool(pool)

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

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(close_sockets)
    return app


async def cluster_resources(
    app: web.Application, settings: Settings, dsn: str, jwt_secret: str, migrate: bool
) -> AsyncIterator[None]:
    """ENF_CLUSTER=ray: this process is a gateway. Actors live in the shard
    actors of the Ray cluster, events come over Redis, and one gateway of the
    cluster (elected in Postgres) runs the delivery worker."""
    if not settings.redis_url:
        raise ValueError("ENF_CLUSTER=ray needs ENF_REDIS_URL (the topic bus and presence leases)")
    if settings.video_provider == "twilio":
        raise ValueError(
            "ENF_VIDEO_PROVIDER=twilio is not supported with ENF_CLUSTER=ray yet"
            " (its status callbacks need the session's process); use webrtc"
        )
    keys = Keys.load(settings.signing_key_file, settings.pii_key_file, settings.data_dir)
    pool = await create_pool(dsn, max_size=settings.db_pool_size)
    if migrate:
        async with pool.acquire() as conn:
            await apply_migrations(conn)
    # Reads only (catch-up, HTTP): the shards write their own journals.
    journal = Journal(pool, writers=1, max_batch=settings.journal_max_batch)
    await journal.start()
    bus = RedisBus(settings.redis_url)
    await bus.start()
    host = RayHost(settings, pool, dsn)
    await host.start()
    if settings.recording != "off":
        await ensure_recorders(settings, settings_payload(settings, dsn))
    leases = PresenceLeases(bus.client, settings.presence_lease_s)
    leases.start()
    storage = storage_for(settings.recordings_location, settings.s3_endpoint_url)
    metrics = Metrics()
    audit = AuditLog(pool)
    await audit.start()
    services = Services(
        settings,
        jwt_secret,
        pool,
        journal,
        bus,
        host,
        keys,
        audit,
        storage,
        None,
        None,
        make_delivery_worker(settings, pool, keys, host),
        metrics,
        leases=leases,
        user_limit=ClusterRateLimit(bus.client, settings.user_rate_limit),
    )
    assert services.user_limit is not None
    services.user_limit.start()

    def use_worker(worker: DeliveryWorker) -> None:
        services.deliveries = worker

    services.leader = DeliveryLeader(
        pool, lambda: make_delivery_worker(settings, pool, keys, host), use_worker
    )
    services.leader.start()
    app[SERVICES] = services
    url = settings.public_url or f"http://{settings.host}:{settings.port}"
    registry = GatewayRegistry(bus.client, host.gateway_id, url, lambda: len(services.connections))
    registry.start()
    logger.info("gateway %s serving (cluster mode)", host.gateway_id)
    try:
        yield
    finally:
        services.shutting_down = True
        await registry.stop()
        await services.user_limit.stop()
        await services.leader.stop()
        await leases.stop()
        await host.stop()
        await journal.stop()
        await audit.stop()
        await bus.stop()
        await close_pool(pool)


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully if the connections come back in time, else cut them."""
    try:
        await asyncio.wait_for(pool.close(), 5)
    except TimeoutError:
        logger.warning("database connections still in use at exit: closing them")
        pool.terminate()

"""The cluster composition (ENF_CLUSTER=ray): this process is a gateway.
Actors live in the shard actors of the Ray cluster, events come over Redis,
and one gateway of the cluster (elected in Postgres) runs the delivery
worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from cluster.leases import PresenceLeases
from cluster.ratelimit import ClusterRateLimit
from cluster.raycluster import settings_payload
from cluster.rayhost import RayHost
from cluster.rayrecorder import ensure_recorders
from cluster.redisbus import RedisBus
from cluster.registry import GatewayRegistry
from config.settings import Settings
from core.ids import shard_of
from delivery.leader import DeliveryLeader
from delivery.worker import DeliveryWorker
from gateway.metrics import Metrics
from gateway.services import SERVICES, Services
from gateway.wiring import close_pool, make_delivery_worker, open_database, public_base
from media.storage import storage_for
from persistence.audit import AuditLog
from persistence.journal import Journal

logger = logging.getLogger(__name__)


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
    keys, pool = await open_database(settings, dsn, migrate=migrate, cluster=True)
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

    def restarted(k: int) -> None:
        # The session actors of shard k forgot who is connected: tell them.
        count = host.router.count

        def hosted(actor: str) -> bool:
            return actor.startswith("session:") and shard_of(actor, count) == k

        for conn in list(services.connections):
            conn.still_open(hosted)

    host.on_restart = restarted
    registry = GatewayRegistry(
        bus.client, host.gateway_id, public_base(settings), lambda: len(services.connections)
    )
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

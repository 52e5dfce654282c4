"""The single-node composition (ENF_CLUSTER=local): every actor in this
process, events on an in-process bus, the recorder as a child process, the
delivery worker here. Resources open in order and close in reverse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from actors.bus import LocalBus
from actors.kinds import ACTOR_KINDS
from actors.localhost import LocalHost
from actors.recovery import recover
from config.settings import Settings
from gateway.metrics import Metrics
from gateway.services import SERVICES, Services
from gateway.wiring import close_pool, make_delivery_worker, open_database, public_base
from media.recorder import RecorderService
from media.storage import storage_for
from media.twilio_video import Credentials, TwilioVideo
from persistence.audit import AuditLog
from persistence.journal import Journal

logger = logging.getLogger(__name__)


async def local_resources(
    app: web.Application, settings: Settings, dsn: str, jwt_secret: str, migrate: bool
) -> AsyncIterator[None]:
    keys, pool = await open_database(settings, dsn, migrate=migrate)
    journal = Journal(pool, writers=settings.journal_writers, max_batch=settings.journal_max_batch)
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
        # The worker process starts now (its imports take a second or two,
        # which the first call would otherwise wait for); a worker that dies
        # is started again at the next call.
        await media.start()
    video: TwilioVideo | None = None
    if settings.video_provider == "twilio":
        video = TwilioVideo(
            Credentials.from_env(),
            storage,
            lambda actor, msg: host.tell(actor, msg),
            settings.data_dir / "twilio",
            callback_url=public_base(settings).rstrip("/") + "/webhooks/twilio/status",
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
    # Rows for a destination without a sender are written held: no poll and no
    # hold of its own for each session's first event (a cluster's shards write
    # them due, and the worker of a gateway holds or delivers them).
    journal.held = deliveries.held_destinations()
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

"""What every request handler reaches: the process's resources, built by the
composition root (gateway/app.py) and kept on the application."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
from aiohttp import web

from actors.actor import ActorHost
from actors.bus import LocalBus
from cluster.leases import PresenceLeases
from cluster.ratelimit import ClusterRateLimit
from cluster.redisbus import RedisBus
from config.settings import Settings
from delivery.leader import DeliveryLeader
from delivery.worker import DeliveryWorker
from gateway.heartbeat import Beating
from gateway.limits import Limits
from gateway.metrics import Metrics
from media.recorder import RecorderService
from media.storage import FileStorage, S3Storage
from media.twilio_video import TwilioVideo
from persistence.audit import AuditLog
from persistence.journal import Journal
from persistence.keys import Keys


class LiveConnection(Beating, Protocol):
    """What shutdown, a shard's restart and the heartbeat need of a client's
    connection (gateway.connection)."""

    ws: web.WebSocketResponse

    def in_flight(self) -> list[asyncio.Task[None]]: ...

    async def drain(self, timeout: float = 2.0) -> None: ...

    def still_open(self, hosted: Callable[[str], bool]) -> None: ...


@dataclass
class Services:
    settings: Settings
    jwt_secret: str
    pool: asyncpg.Pool
    journal: Journal
    bus: LocalBus | RedisBus
    host: ActorHost
    keys: Keys
    audit: AuditLog
    storage: FileStorage | S3Storage
    media: RecorderService | None
    video: TwilioVideo | None
    deliveries: DeliveryWorker
    metrics: Metrics
    # Cluster mode: the presence leases this gateway renews, and the election
    # of the one gateway that runs the delivery worker.
    leases: PresenceLeases | None = None
    leader: DeliveryLeader | None = None
    user_limit: ClusterRateLimit | None = None
    connections: set[LiveConnection] = field(default_factory=set)
    shutting_down: bool = False
    # The limits kept per server (gateway.limits), built from the settings.
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings, self.metrics)


SERVICES = web.AppKey("services", Services)

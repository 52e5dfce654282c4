"""LocalHost: shards in this process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.actor import ASK_TIMEOUT_S, Actor, ActorContext, Messenger
from actors.bus import TopicBus
from actors.cell import ActorCell, Shard, answer
from actors.ports import DomainMetrics, Presence, Recorder, VideoRooms
from config.settings import Settings
from core.errors import ProtocolError
from core.ids import kind_of, shard_of
from core.loops import BackgroundLoop
from core.messages import Message
from persistence.journal import Journal
from persistence.keys import Keys

logger = logging.getLogger(__name__)


class LocalHost:
    """Shards in this process: all of them (ENF_CLUSTER=local), or, in a shard
    process of the cluster, the ones listed in `indexes`, with `remote`
    carrying messages for actors of other shards."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        bus: TopicBus,
        factories: dict[str, type[Actor]],
        keys: Keys,
        media: Recorder | None = None,
        video: VideoRooms | None = None,
        *,
        metrics: DomainMetrics | None = None,
        presence: Presence | None = None,
        count: int | None = None,
        indexes: list[int] | None = None,
        remote: Messenger | None = None,
    ) -> None:
        self.settings = settings
        self.ctx = ActorContext(self, journal, bus, settings, keys, media, video, metrics, presence)
        self._factories = factories
        self.count = count or settings.shards
        wanted = range(self.count) if indexes is None else indexes
        self.shards = [Shard(i, self._make, settings.mailbox_size) for i in wanted]
        self._by_index = {s.index: s for s in self.shards}
        self.remote = remote
        self._sweeper = BackgroundLoop("passivation-sweeper", self._sweep)

    def _make(self, actor_id: str) -> Actor:
        kind = kind_of(actor_id)
        cls = self._factories.get(kind)
        if cls is None:
            raise ProtocolError("bad_request", f"no actor kind {kind!r}")
        return cls(actor_id, self.ctx)

    def local_shard(self, actor_id: str) -> Shard | None:
        return self._by_index.get(shard_of(actor_id, self.count))

    def _cell(self, actor_id: str, shard: Shard | None = None) -> ActorCell:
        shard = shard or self.local_shard(actor_id)
        if shard is None:
            raise ProtocolError("unavailable", f"{actor_id} is not hosted here")
        return shard.cell(actor_id)

    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        shard = self.local_shard(actor_id)
        if shard is None and self.remote is not None:
            return await self.remote.ask(actor_id, msg, timeout)
        cell = self._cell(actor_id, shard)
        return await answer(cell, cell.post(msg), timeout, msg.kind)

    def tell(self, actor_id: str, msg: Message) -> None:
        shard = self.local_shard(actor_id)
        if shard is None and self.remote is not None:
            self.remote.tell(actor_id, msg)
            return
        try:
            self._cell(actor_id, shard).tell(msg)
        except ProtocolError as exc:
            logger.warning("tell %s %s dropped: %s", actor_id, msg.kind, exc.message)

    def actor_count(self) -> int:
        return sum(len(s.cells) for s in self.shards)

    def shard_figures(self) -> dict[int, dict[str, Any]]:
        return {}

    def mailbox_depths(self) -> list[int]:
        return [c.depth for s in self.shards for c in s.cells.values()]

    async def health(self) -> str:
        return "ok"

    def is_active(self, actor_id: str) -> bool:
        shard = self.local_shard(actor_id)
        return shard is not None and actor_id in shard.cells

    async def start(self) -> None:
        for shard in self.shards:
            shard.start()
        self._sweeper.start()

    async def _sweep(self) -> None:
        period = max(1.0, self.settings.passivate_after_s / 4)
        while True:
            await asyncio.sleep(period)
            for shard in self.shards:
                try:
                    n = await shard.passivate_idle(self.settings.passivate_after_s)
                    if n:
                        logger.info("shard %d passivated %d idle actors", shard.index, n)
                except Exception:
                    logger.exception("passivation sweep failed")

    async def stop(self) -> None:
        await self._sweeper.stop()
        for shard in self.shards:
            await shard.stop()

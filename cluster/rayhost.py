"""The Ray host (ENF_CLUSTER=ray): shards as named, detached Ray actors.

- `ShardServer` is one shard: a `LocalHost` hosting that shard's logical
  actors (many per process, exactly as on a single node), its own journal
  fenced by the shard's epoch, and a Redis publisher for the topic bus.
  Messages for actors of other shards go through a `ShardRouter`.
- `ShardActor` is the Ray actor around a `ShardServer`: named
  `shard-<k>` in the cluster's namespace, detached, `max_restarts=-1`.
- `ShardRouter` carries asks and tells to shards: everything addressed to one
  shard in the same event-loop tick goes in one Ray call (`deliver`). Ray
  does not order calls to async actors, so each call carries the sender's
  sequence number for that shard, and the shard posts batches to its
  mailboxes in that order (per (connection, actor) order follows).
- `RayHost` is the gateway's `ActorHost`: it joins the running cluster,
  writes the shard map if there is none, starts the shard actors that are
  missing, and routes through a `ShardRouter`.

The shard of an actor is `shard_of(actor_id, count)` with the count of the
shard map in Postgres; where each shard runs is the map's placement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from actors.actor import ASK_TIMEOUT_S
from cluster.raycluster import connect_ray
from cluster.router import ShardRouter
from cluster.shard import ensure_shards
from config.settings import Settings
from core.loops import BackgroundLoop
from core.messages import Message
from persistence.shardmap import ensure_map

logger = logging.getLogger(__name__)


class RayHost:
    """The gateway's ActorHost in cluster mode."""

    def __init__(self, settings: Settings, pool: Any, dsn: str) -> None:
        self.settings = settings
        self.pool = pool
        self.dsn = dsn
        self.gateway_id = f"gw-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.router = ShardRouter(settings, pool, self.gateway_id)
        self.shard_info: list[dict[str, Any]] = []
        self.shards_down: dict[int, str] = {}  # shard -> why it did not answer the last look
        # Called with a shard's index when it is seen with a new epoch (it
        # restarted and lost what lives in memory only: the connections its
        # session actors knew). The gateway announces them again.
        self.on_restart: Callable[[int], None] | None = None
        self._epochs: dict[int, int] = {}
        self._watch = BackgroundLoop("shard-map-watch", self._follow_map)

    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        return await self.router.ask(actor_id, msg, timeout)

    def tell(self, actor_id: str, msg: Message) -> None:
        self.router.tell(actor_id, msg)

    def actor_count(self) -> int:
        return sum(int(i.get("actors", 0)) for i in self.shard_info)

    def mailbox_depths(self) -> list[int]:
        return []  # the mailboxes are in the shard processes

    def shard_figures(self) -> dict[int, dict[str, Any]]:
        """Each shard's last answer; a shard that did not answer the last
        look is {"up": False}."""
        figures: dict[int, dict[str, Any]] = {
            i["shard"]: {**i, "up": True} for i in self.shard_info
        }
        for k in self.shards_down:
            figures[k] = {"shard": k, "up": False}
        return figures

    async def start(self) -> None:
        # Importing Ray, probing the head and ray.init block: off the event loop.
        await asyncio.to_thread(connect_ray, self.settings)
        shard_map = await ensure_map(self.pool, self.settings.shards)
        self.router.map = shard_map
        self.shard_info = await ensure_shards(self.settings, self.dsn, shard_map)
        self._note_epochs(self.shard_info)
        self._watch.start()

    async def health(self) -> str:
        """ "ok" when every shard answers within 2 s; else which do not."""
        infos, down = await self._shards("info", 2.0)
        self.shards_down = down
        if down:
            return "unavailable: " + "; ".join(f"shard {k}: {why}" for k, why in down.items())
        self.shard_info = infos
        fenced = [i["shard"] for i in infos if i.get("fenced")]
        return f"unavailable: shards {fenced} fenced, restarting" if fenced else "ok"

    async def _shards(self, method: str, timeout: float) -> tuple[list[Any], dict[int, str]]:
        """`method` of every shard, each on its own: the answers, and why each
        shard that did not answer did not. A shard whose handle fails (killed,
        moved by a rebalance) is looked up by name again next time."""

        async def one(k: int) -> Any:
            return await asyncio.wait_for(getattr(self.router.handle(k), method).remote(), timeout)

        got = await asyncio.gather(
            *(one(k) for k in range(self.router.count)), return_exceptions=True
        )
        answers, down = [], {}
        for k, value in enumerate(got):
            if isinstance(value, BaseException):
                self.router.forget(k)
                down[k] = type(value).__name__
            else:
                answers.append(value)
        return answers, down

    async def _follow_map(self) -> None:
        """Re-read the shard map when its epoch moves (a rebalance), and the
        shards' figures for /metrics and `cluster status`."""
        while True:
            await asyncio.sleep(5.0)
            try:
                before = self.router.map
                now = await self.router.refresh()
                if before is not None and now.epoch != before.epoch:
                    logger.info("shard map moved to epoch %d: re-resolving shards", now.epoch)
                    self.router._handles.clear()
            except Exception as exc:
                logger.warning("cannot re-read the shard map: %s", exc)
            # A shard restarted by Ray starts itself; this makes sure of it,
            # and keeps the shards' figures (actors hosted) for /metrics. A
            # dead handle (ActorDiedError after a rebalance) is dropped.
            infos, down = await self._shards("ready", 4.0)
            self.shards_down = down
            if down:
                logger.warning("shards not answering: %s", down)
            answered = {i["shard"] for i in infos}
            self.shard_info = infos + [i for i in self.shard_info if i["shard"] not in answered]
            self._note_epochs(infos)

    def _note_epochs(self, infos: list[dict[str, Any]]) -> None:
        for info in infos:
            k, epoch = info["shard"], info.get("epoch")
            before = self._epochs.get(k)
            if epoch is None:
                continue
            self._epochs[k] = epoch
            if before is not None and epoch != before and self.on_restart is not None:
                logger.info("shard %d restarted (epoch %s -> %s)", k, before, epoch)
                self.on_restart(k)

    async def stop(self) -> None:
        await self._watch.stop()
        await self.router.stop()

"""One shard of the cluster: `ShardServer` hosts that shard's logical actors
(many per process, exactly as on a single node) with its own journal, fenced
by the shard's epoch, and a Redis publisher for the topic bus; messages for
actors of other shards go through a `ShardRouter`. `ShardActor` is the Ray
actor around it: named `shard-<k>`, detached, `max_restarts=-1`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from actors.actor import ASK_TIMEOUT_S
from actors.cell import answer
from actors.kinds import ACTOR_KINDS
from actors.localhost import LocalHost
from actors.recovery import recover
from cluster.leases import PresenceLeases
from cluster.raycluster import (
    Item,
    Result,
    import_ray,
    node_id,
    settings_payload,
    shard_name,
    shard_options,
)
from cluster.rayrecorder import RayRecorder
from cluster.redisbus import RedisBus
from cluster.router import ShardRouter
from config.logging import setup_logging
from config.settings import Settings
from core.errors import ProtocolError
from persistence.journal import Journal
from persistence.keys import KeyFileError, Keys
from persistence.pool import create_pool
from persistence.shardmap import ShardMap, agree_on_keys, claim_shard, key_mismatch, load_map

logger = logging.getLogger(__name__)

# How long a shard waits for a missing earlier batch of a sender before it
# takes the later one (the earlier one was lost with a restarted sender).
ORDER_WAIT_S = 1.0


class ShardServer:
    """One shard of the cluster. Plain Python: the Ray actor wraps it, and a
    test can start one by hand (a second incarnation of the same shard)."""

    def __init__(
        self, index: int, payload: dict[str, Any], *, exit_when_fenced: bool = False
    ) -> None:
        self.index = index
        self.payload = payload
        self.exit_when_fenced = exit_when_fenced
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.epoch = 0
        self.fenced = False
        self.key_ids: dict[str, str] = {}
        self.started_at = 0.0
        self.host: LocalHost | None = None
        self.journal: Journal | None = None
        self._starting: asyncio.Task[None] | None = None
        self._expected: dict[str, int] = {}
        self._order = asyncio.Condition()
        self._resources: list[Any] = []

    async def ready(self) -> dict[str, Any]:
        """Start the shard (once); a start that failed (Postgres or Redis away)
        is tried again by the next call."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except Exception:
            if self._starting is starting and self.host is None:
                self._starting = None
                await self.stop()
            raise
        return self.info()

    def info(self) -> dict[str, Any]:
        host = self.host
        return {
            "shard": self.index,
            "node_id": node_id(),
            "epoch": self.epoch,
            "owner": self.owner,
            "pid": os.getpid(),
            "fenced": self.fenced,
            "keys": self.key_ids,
            "actors": host.actor_count() if host else 0,
            **self._figures(),
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0,
        }

    async def _start(self) -> None:
        settings = Settings(**self.payload)
        if not logging.getLogger().handlers:
            setup_logging(settings.log_level, settings.log_format)
        assert settings.database_url and settings.redis_url
        pool = await create_pool(settings.database_url, max_size=settings.shard_pool_size)
        # Closed by stop(), last opened first (also after a failed start).
        self._resources = [pool]
        # A shard never makes keys of its own: it loads the cluster's, and
        # refuses to start with others (the first gateway recorded their ids),
        # before it claims the shard: a misconfigured node fences no one.
        keys = await asyncio.to_thread(
            Keys.load, settings.signing_key_file, settings.pii_key_file, settings.data_dir, False
        )
        mismatch = key_mismatch(keys.ids(), await agree_on_keys(pool, keys.ids()))
        if mismatch is not None:
            raise KeyFileError(f"shard {self.index}: {mismatch}")
        self.key_ids = keys.ids()
        shard_map = await load_map(pool)
        self.epoch = await claim_shard(pool, self.index, self.owner)
        journal = self.journal = Journal(pool, writers=1, max_batch=settings.journal_max_batch)
        journal.fence = (self.index, self.epoch)
        journal.on_fenced = self._on_fenced
        await journal.start()
        self._resources.insert(0, journal)
        bus = RedisBus(settings.redis_url)
        await bus.start(subscriber=False)
        self._resources.insert(0, bus)
        router = ShardRouter(settings, pool, f"shard-{self.index}/{self.owner}", shard_map)
        media: RayRecorder | None = None
        if settings.recording != "off" and settings.video_provider == "webrtc":
            media = RayRecorder(settings)
        host = LocalHost(
            settings,
            journal,
            bus,
            ACTOR_KINDS,
            keys,
            media,
            None,
            count=shard_map.count,
            indexes=[self.index],
            remote=router,
            presence=PresenceLeases(bus.client, settings.presence_lease_s),
        )
        await host.start()
        self._resources.insert(0, host)
        self.host = host
        self.started_at = time.monotonic()
        logger.info(
            "shard %d of %d started (epoch %d, %s)",
            self.index,
            shard_map.count,
            self.epoch,
            self.owner,
        )
        try:
            await self._recover(host)
        except Exception:
            logger.exception("shard %d: recovery failed; actors activate on demand", self.index)

    async def _recover(self, host: LocalHost) -> None:
        """What must go on without a client, for this shard's actors."""
        n = await recover(
            host,
            host.ctx.journal,
            presence=host.ctx.presence,
            hosts=lambda address: host.local_shard(address) is not None,
        )
        if n:
            logger.info("shard %d recovered %d sessions", self.index, n)

    def _on_fenced(self) -> None:
        """A newer incarnation claimed this shard: drop every actor (their state
        may be stale) and refuse all messages. In a Ray actor the process
        then exits, so Ray's restart makes the named shard claim it again."""
        if self.fenced:
            return
        self.fenced = True
        dropped = self.host.shards[0].drop_all(self._moved()) if self.host else 0
        logger.error(
            "shard %d (epoch %d, %s) was fenced by a newer incarnation: dropped %d actors",
            self.index,
            self.epoch,
            self.owner,
            dropped,
        )
        if self.exit_when_fenced:
            asyncio.get_running_loop().call_later(0.5, os._exit, 1)

    @staticmethod
    def _moved() -> ProtocolError:
        return ProtocolError("unavailable", "the shard moved: try again")

    async def deliver(self, sender: str, n: int, items: list[Item]) -> list[Result]:
        """Post a sender's batch to the mailboxes in the sender's order, then
        wait for the replies wanted."""
        if self.host is None:
            await self.ready()
        await self._in_order(sender, n)
        host = self.host
        assert host is not None
        futures: list[Any] = []
        try:
            for actor_id, msg, want in items:
                try:
                    if self.fenced:
                        raise self._moved()
                    cell = host._cell(actor_id)
                    if want:
                        futures.append(answer(cell, cell.post(msg), ASK_TIMEOUT_S, msg.kind))
                    else:
                        cell.tell(msg)
                        futures.append(None)
                except ProtocolError as exc:
                    futures.append(exc)
        finally:
            async with self._order:
                self._expected[sender] = max(self._expected.get(sender, 0), n + 1)
                self._order.notify_all()
        results: list[Result] = []
        for f in futures:
            if f is None:
                results.append(("ok", None, ""))
            elif isinstance(f, ProtocolError):
                results.append(("err", f.code, f.message))
            else:
                try:
                    results.append(("ok", await f, ""))
                except ProtocolError as exc:
                    results.append(("err", exc.code, exc.message))
        return results

    async def _in_order(self, sender: str, n: int) -> None:
        async with self._order:
            if sender not in self._expected:
                self._expected[sender] = n
            deadline = time.monotonic() + ORDER_WAIT_S
            while n > self._expected[sender]:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning(
                        "shard %d: batch %d of %s never came; going on", self.index, n - 1, sender
                    )
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._order.wait(), left)

    def _figures(self) -> dict[str, Any]:
        """Mailboxes and journal figures, for the gateways' /metrics."""
        host, journal = self.host, self.journal
        depths = host.mailbox_depths() if host else []
        stats = journal.stats if journal else None
        return {
            "mailbox_max": max(depths, default=0),
            "mailbox_total": sum(depths),
            "journal_batches": stats.batches if stats else 0,
            "journal_appends": stats.appends if stats else 0,
            "journal_write_seconds": round(stats.write_seconds, 6) if stats else 0.0,
        }

    async def passivate_all(self) -> int:
        """Snapshot and drop every actor (before the shard moves)."""
        if self.host is None:
            return 0
        n = self.host.actor_count()
        await self.host.stop()
        await self.host.start()
        return n

    async def stop(self) -> None:
        for r in self._resources:
            with contextlib.suppress(Exception):
                if hasattr(r, "close"):
                    await r.close()
                else:
                    await r.stop()
        self._resources.clear()


def shard_actor_class() -> Any:
    """The Ray actor class around a ShardServer (built on first use, so that
    importing this module does not import Ray)."""
    global _SHARD_ACTOR
    if _SHARD_ACTOR is None:
        ray = import_ray()

        class ShardActor:
            def __init__(self, index: int, payload: dict[str, Any]) -> None:
                self.server = ShardServer(index, payload, exit_when_fenced=True)
                # Start at once, also when Ray restarts this process: a call to
                # ourselves, run as soon as the actor's event loop is up.
                self._kick = ray.get_runtime_context().current_actor.ready.remote()

            async def ready(self) -> dict[str, Any]:
                return await self.server.ready()

            async def info(self) -> dict[str, Any]:
                return self.server.info()

            async def deliver(self, sender: str, n: int, items: list[Item]) -> list[Result]:
                return await self.server.deliver(sender, n, items)

            async def passivate_all(self) -> int:
                return await self.server.passivate_all()

            async def shutdown(self) -> None:
                await self.server.passivate_all()
                await self.server.stop()

        _SHARD_ACTOR = ray.remote(ShardActor)
    return _SHARD_ACTOR


_SHARD_ACTOR: Any = None


async def ensure_shards(settings: Settings, dsn: str, shard_map: ShardMap) -> list[dict[str, Any]]:
    """Start the shard actors that do not exist yet; wait until all answer."""
    ray = import_ray()
    cls = shard_actor_class()
    payload = settings_payload(settings, dsn)
    handles = []
    for k in range(shard_map.count):
        try:
            h = ray.get_actor(shard_name(k), namespace=settings.ray_namespace)
        except ValueError:
            opts = shard_options(shard_map, k)
            h = cls.options(namespace=settings.ray_namespace, get_if_exists=True, **opts).remote(
                k, payload
            )
        handles.append(h)
    infos: list[dict[str, Any]] = list(await asyncio.gather(*(h.ready.remote() for h in handles)))
    logger.info("%d shards ready", len(infos))
    return infos

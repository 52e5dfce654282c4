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
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from typing import Any

from actors.messages import Message
from actors.runtime import ASK_TIMEOUT_S, LocalHost, shard_of
from config.settings import Settings
from gateway.protocol import ProtocolError
from persistence.shardmap import ShardMap, claim_shard, ensure_map, load_map

logger = logging.getLogger(__name__)

# How long a shard waits for a missing earlier batch of a sender before it
# takes the later one (the earlier one was lost with a restarted sender).
ORDER_WAIT_S = 1.0
# Calls a sender keeps in flight to one shard; more requests wait for the next
# call, so under load each call carries more of them.
MAX_IN_FLIGHT = 2

Item = tuple[str, Message, bool]  # (actor id, message, wants a reply)
Result = tuple[str, Any, str]  # ("ok", value, "") | ("err", code, message)


def _node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    ray = _import_ray()
    if not ray.is_initialized():
        return None
    node: str = ray.get_runtime_context().get_node_id()
    return node


def shard_name(index: int) -> str:
    return f"shard-{index}"


def recorder_name(index: int) -> str:
    return f"recorder-{index}"


def settings_payload(settings: Settings, dsn: str) -> dict[str, Any]:
    """What a shard process needs to build the same Settings (JSON-safe)."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["database_url"] = dsn
    data["data_dir"] = str(settings.data_dir.resolve())
    return data


def _import_ray() -> Any:
    import ray

    return ray


# -- the shard side ------------------------------------------------------------------


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
        self.started_at = 0.0
        self.host: LocalHost | None = None
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
            "node_id": _node_id(),
            "epoch": self.epoch,
            "owner": self.owner,
            "pid": os.getpid(),
            "fenced": self.fenced,
            "actors": host.actor_count() if host else 0,
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0,
        }

    async def _start(self) -> None:
        from actors.leases import PresenceLeases
        from actors.redisbus import RedisBus
        from config.logging import setup_logging
        from gateway.app import ACTOR_KINDS
        from persistence.journal import Journal
        from persistence.keys import Keys
        from persistence.pool import create_pool

        settings = Settings(**self.payload)
        if not logging.getLogger().handlers:
            setup_logging(settings.log_level, settings.log_format)
        assert settings.database_url and settings.redis_url
        pool = await create_pool(settings.database_url, max_size=settings.shard_pool_size)
        # Closed by stop(), last opened first (also after a failed start).
        self._resources = [pool]
        shard_map = await load_map(pool)
        self.epoch = await claim_shard(pool, self.index, self.owner)
        journal = Journal(pool, writers=1, max_batch=settings.journal_max_batch)
        journal.fence = (self.index, self.epoch)
        journal.on_fenced = self._on_fenced
        await journal.start()
        self._resources.insert(0, journal)
        bus = RedisBus(settings.redis_url)
        await bus.start(subscriber=False)
        self._resources.insert(0, bus)
        keys = Keys.load(settings.signing_key_file, settings.pii_key_file, settings.data_dir)
        router = ShardRouter(settings, pool, f"shard-{self.index}/{self.owner}", shard_map)
        media = None
        if settings.recording != "off" and settings.video_provider == "webrtc":
            from media.rayrecorder import RayRecorder

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
        )
        host.ctx.presence = PresenceLeases(bus.client, settings.presence_lease_s)
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
        """What must go on without a client, for this shard's actors: the
        Matchmaker's queue, request expiry, unfinished finalisation, and the
        presence of notaries still connected."""
        from actors import lifecycle as L

        pool = host.ctx.pool
        if host.local_shard("matchmaker") is not None:
            await host.ask("matchmaker", Message("presence_list"))
            # Notaries tell the Matchmaker where they stand (it lost its list).
            for notary_id in await host.ctx.presence.online_notaries():
                host.tell(f"notary:{notary_id}", Message("announce"))
        else:
            for notary_id in await host.ctx.presence.online_notaries():
                if host.local_shard(f"notary:{notary_id}") is not None:
                    host.tell(f"notary:{notary_id}", Message("announce"))
        rows = await pool.fetch(
            "SELECT session_id FROM sessions WHERE state = ANY($1)", list(L.RECOVER_ON_START)
        )
        mine = [r["session_id"] for r in rows if host.local_shard(f"session:{r['session_id']}")]
        for sid in mine:
            host.tell(f"session:{sid}", Message("recover"))
        if mine:
            logger.info("shard %d recovering %d sessions", self.index, len(mine))

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
                        futures.append(cell.post(msg))
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
                    results.append(("ok", await asyncio.wait_for(f, ASK_TIMEOUT_S), ""))
                except ProtocolError as exc:
                    results.append(("err", exc.code, exc.message))
                except TimeoutError:
                    results.append(("err", "unavailable", "timed out, try again"))
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
        ray = _import_ray()

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


# -- the caller side ------------------------------------------------------------------


class ShardRouter:
    """Asks and tells to the shards' Ray actors, batched per shard per tick."""

    def __init__(
        self, settings: Settings, pool: Any, sender: str, shard_map: ShardMap | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.sender = sender
        self.namespace = settings.ray_namespace
        self.batch = settings.ray_batch
        self.map = shard_map
        self._handles: dict[int, Any] = {}
        self._pending: defaultdict[int, list[tuple[str, Message, asyncio.Future[Any] | None]]] = (
            defaultdict(list)
        )
        self._numbers: defaultdict[int, int] = defaultdict(int)
        self._in_flight: defaultdict[int, int] = defaultdict(int)
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.items = 0

    @property
    def count(self) -> int:
        if self.map is None:
            raise ProtocolError("unavailable", "no shard map yet")
        return self.map.count

    async def refresh(self) -> ShardMap:
        self.map = await load_map(self.pool)
        return self.map

    def handle(self, index: int) -> Any:
        h = self._handles.get(index)
        if h is None:
            ray = _import_ray()
            h = self._handles[index] = ray.get_actor(shard_name(index), namespace=self.namespace)
        return h

    def forget(self, index: int) -> None:
        self._handles.pop(index, None)

    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(actor_id, msg, fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            logger.error("ask %s %s timed out", actor_id, msg.kind)
            raise ProtocolError("unavailable", "timed out, try again") from None

    def tell(self, actor_id: str, msg: Message) -> None:
        try:
            self._enqueue(actor_id, msg, None)
        except ProtocolError as exc:
            logger.warning("tell %s %s dropped: %s", actor_id, msg.kind, exc.message)

    def _enqueue(self, actor_id: str, msg: Message, fut: asyncio.Future[Any] | None) -> None:
        index = shard_of(actor_id, self.count)
        self._pending[index].append((actor_id, msg, fut))
        if not self.batch:
            self._send(index)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Once per tick: a call to each shard with requests waiting, unless
        that shard already has MAX_IN_FLIGHT calls out; those requests go with
        the next call, when one of them returns (batches grow with the load)."""
        self._flush_scheduled = False
        for index in list(self._pending):
            if self._in_flight[index] < MAX_IN_FLIGHT:
                self._send(index)

    def _send(self, index: int) -> None:
        entries = self._pending.pop(index, None)
        if not entries:
            return
        n = self._numbers[index]
        self._numbers[index] = n + 1
        self._in_flight[index] += 1
        task = asyncio.ensure_future(self._call(index, n, entries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _returned(self, index: int) -> None:
        self._in_flight[index] -= 1
        if self.batch and self._pending.get(index) and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _call(
        self, index: int, n: int, entries: list[tuple[str, Message, asyncio.Future[Any] | None]]
    ) -> None:
        try:
            await self._call_once(index, n, entries)
        finally:
            self._returned(index)

    async def _call_once(
        self, index: int, n: int, entries: list[tuple[str, Message, asyncio.Future[Any] | None]]
    ) -> None:
        items = [(a, m, f is not None) for a, m, f in entries]
        self.calls += 1
        self.items += len(items)
        try:
            results = await self.handle(index).deliver.remote(self.sender, n, items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The shard died or is restarting (Ray restarts it): nothing sent in
            # this call is known to be applied; the clients retry by id.
            self.forget(index)
            logger.warning("shard %d unavailable: %s: %s", index, type(exc).__name__, exc)
            for actor_id, m, f in entries:
                if f is None:
                    logger.warning("tell %s %s lost with shard %d", actor_id, m.kind, index)
                elif not f.done():
                    f.set_exception(ProtocolError("unavailable", "shard restarting, try again"))
            return
        for (_, _, f), (status, value, message) in zip(entries, results, strict=True):
            if f is None or f.done():
                continue
            if status == "ok":
                f.set_result(value)
            else:
                f.set_exception(ProtocolError(value, message))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()


class RayHost:
    """The gateway's ActorHost in cluster mode."""

    def __init__(self, settings: Settings, pool: Any, dsn: str) -> None:
        self.settings = settings
        self.pool = pool
        self.dsn = dsn
        self.gateway_id = f"gw-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.router = ShardRouter(settings, pool, self.gateway_id)
        self.shards: list[Any] = []  # no local shards (metrics look here)
        self.shard_info: list[dict[str, Any]] = []
        self._watch: asyncio.Task[None] | None = None

    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        return await self.router.ask(actor_id, msg, timeout)

    def tell(self, actor_id: str, msg: Message) -> None:
        self.router.tell(actor_id, msg)

    def actor_count(self) -> int:
        return sum(int(i.get("actors", 0)) for i in self.shard_info)

    async def start(self) -> None:
        connect_ray(self.settings)
        shard_map = await ensure_map(self.pool, self.settings.shards)
        self.router.map = shard_map
        self.shard_info = await ensure_shards(self.settings, self.dsn, shard_map)
        self._watch = asyncio.create_task(self._follow_map(), name="shard-map-watch")

    async def health(self) -> str:
        """ "ok" when every shard answers within 2 s."""
        count = self.router.count
        try:
            infos = await asyncio.wait_for(
                asyncio.gather(*(self.router.handle(k).info.remote() for k in range(count))), 2.0
            )
        except Exception as exc:
            return f"unavailable: {type(exc).__name__}"
        self.shard_info = list(infos)
        fenced = [i["shard"] for i in infos if i.get("fenced")]
        return f"unavailable: shards {fenced} fenced, restarting" if fenced else "ok"

    async def _follow_map(self) -> None:
        """Re-read the shard map when its epoch moves (a rebalance), and the
        shards' figures for /metrics and `cluster status`."""
        while True:
            await asyncio.sleep(5.0)
            try:
                # A shard restarted by Ray starts itself; this makes sure of it,
                # and keeps the shards' figures (actors hosted) for /metrics.
                calls = [self.router.handle(k).ready.remote() for k in range(self.router.count)]
                with contextlib.suppress(TimeoutError):
                    self.shard_info = list(await asyncio.wait_for(asyncio.gather(*calls), 4.0))
                before = self.router.map
                now = await self.router.refresh()
                if before is not None and now.epoch != before.epoch:
                    logger.info("shard map moved to epoch %d: re-resolving shards", now.epoch)
                    self.router._handles.clear()
            except Exception as exc:
                logger.warning("cannot re-read the shard map: %s", exc)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.router.stop()


def connect_ray(settings: Settings) -> None:
    """Join the running Ray cluster; never start a private one."""
    ray = _import_ray()
    if ray.is_initialized():
        return
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        # Ray retries an unreachable head for minutes; say so at once instead.
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            raise RuntimeError(
                f"ENF_CLUSTER=ray: no Ray cluster answers at {address} ({exc}). Start one with"
                " `ray start --head` (README, Running a cluster) or fix RAY_ADDRESS."
            ) from exc
    # A cluster on loopback (one machine, tests): stay on loopback too.
    local = address.split(":")[0] in ("127.0.0.1", "localhost")
    try:
        ray.init(
            address=address,
            namespace=settings.ray_namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
            **({"_node_ip_address": "127.0.0.1"} if local else {}),
        )
    except ConnectionError as exc:
        raise RuntimeError(
            f"ENF_CLUSTER=ray: no running Ray cluster at {address!r} ({exc}). Start one with"
            " `ray start --head` (see README, Cluster) or set RAY_ADDRESS."
        ) from exc
    logger.info("joined the Ray cluster at %s (namespace %s)", address, settings.ray_namespace)


def shard_options(shard_map: ShardMap, index: int) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = shard_map.nodes[index] if index < len(shard_map.nodes) else None
    strategy: Any = NodeAffinitySchedulingStrategy(node_id=node, soft=True) if node else "SPREAD"
    return {
        "name": shard_name(index),
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
        "num_cpus": 0,
        "scheduling_strategy": strategy,
    }


async def ensure_shards(settings: Settings, dsn: str, shard_map: ShardMap) -> list[dict[str, Any]]:
    """Start the shard actors that do not exist yet; wait until all answer."""
    ray = _import_ray()
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


async def kill_shards(namespace: str, count: int, recorders: int = 1) -> None:
    """Stop a namespace's shard and recorder actors for good (tests)."""
    ray = _import_ray()
    names = [shard_name(k) for k in range(count)] + [recorder_name(i) for i in range(recorders)]
    for name in names:
        try:
            h = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        with contextlib.suppress(Exception):
            await asyncio.wait_for(h.shutdown.remote(), 10)
        with contextlib.suppress(Exception):
            ray.kill(h, no_restart=True)

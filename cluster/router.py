"""`ShardRouter` carries asks and tells to shards: everything addressed to one
shard in the same event-loop tick goes in one Ray call (`deliver`). Ray does
not order calls to async actors, so each call carries the sender's sequence
number for that shard, and the shard posts batches to its mailboxes in that
order (per (connection, actor) order follows)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from actors.actor import ASK_TIMEOUT_S
from cluster.raycluster import import_ray, shard_name
from config.settings import Settings
from core.errors import ProtocolError
from core.ids import shard_of
from core.messages import Message
from persistence.shardmap import ShardMap, load_map

logger = logging.getLogger(__name__)

# Calls a sender keeps in flight to one shard; more requests wait for the next
# call, so under load each call carries more of them.
MAX_IN_FLIGHT = 2
# The pause before tells of a failed call go to the shard's next incarnation.
TELL_RETRY_S = 1.0


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
        self._stopped = False
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
            ray = import_ray()
            h = self._handles[index] = ray.get_actor(shard_name(index), namespace=self.namespace)
        return h

    def forget(self, index: int) -> None:
        self._handles.pop(index, None)

    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(actor_id, msg, fut)
        # The shard answers an ask that did not start within `timeout` itself
        # (`unavailable`, never run) and waits for one that did: this wait is
        # for a shard that never answers (it died with the ask), so it is longer.
        try:
            return await asyncio.wait_for(fut, timeout * 3)
        except TimeoutError:
            logger.error("ask %s %s: no answer from its shard", actor_id, msg.kind)
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
            # The shard died or is restarting (Ray restarts it under the same
            # name): nothing sent in this call is known to be applied. Asks are
            # answered `unavailable` (the clients retry by id); tells, which no
            # client will retry, are sent again to the shard's next incarnation
            # (their handlers are idempotent: at least once).
            self.forget(index)
            logger.warning("shard %d unavailable: %s: %s", index, type(exc).__name__, exc)
            tells = [(a, m) for a, m, f in entries if f is None]
            for _, _, f in entries:
                if f is not None and not f.done():
                    f.set_exception(ProtocolError("unavailable", "shard restarting, try again"))
            if tells:
                logger.warning(
                    "%d tells for shard %d sent again in %.0f s", len(tells), index, TELL_RETRY_S
                )
                asyncio.get_running_loop().call_later(TELL_RETRY_S, self._tell_again, tells)
            return
        for (_, _, f), (status, value, message) in zip(entries, results, strict=True):
            if f is None or f.done():
                continue
            if status == "ok":
                f.set_result(value)
            else:
                f.set_exception(ProtocolError(value, message))

    def _tell_again(self, tells: list[tuple[str, Message]]) -> None:
        if self._stopped:
            logger.warning("%d tells not sent: stopping", len(tells))
            return
        for actor_id, msg in tells:
            self.tell(actor_id, msg)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._stopped = True
        for t in list(self._tasks):
            t.cancel()

"""Virtual actors: bounded mailbox, one run loop each, hosted by shards.

An actor is addressed by id (`session:<uuid>`, `notary:<id>`, `matchmaker`);
the shard that hosts it is a pure function of the id and the shard count. An
actor is activated on its first message (`on_activate` loads its state) and
passivated when idle (`on_passivate` snapshots it). Messages are handled one
at a time in arrival order; an error in a handler fails that message only.

`ActorHost` is the interface the gateway and the actors use; `LocalHost`
keeps the shards in this process. A Ray host implements the same interface.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from actors.bus import TopicBus
from actors.messages import Message
from config import logging as log_context
from config import tracing
from config.settings import Settings
from gateway.protocol import ProtocolError
from persistence.journal import Journal, StaleActivation, Unavailable
from persistence.keys import Keys

logger = logging.getLogger(__name__)

ASK_TIMEOUT_S = 30.0


def shard_of(actor_id: str, shards: int) -> int:
    """Stable across processes (unlike `hash()`), so every node agrees."""
    digest = hashlib.blake2b(actor_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class ActorHost(Protocol):
    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        """Deliver `msg` and return the handler's result, or raise its ProtocolError."""

    def tell(self, actor_id: str, msg: Message) -> None:
        """Deliver `msg` without waiting; errors are logged by the actor."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ActorContext:
    """What an actor may use: the host (to reach other actors), the journal,
    the bus, the settings and the database pool."""

    def __init__(
        self,
        host: ActorHost,
        journal: Journal,
        bus: TopicBus,
        settings: Settings,
        keys: Keys,
        media: Any = None,
        video: Any = None,
    ) -> None:
        self.host = host
        # The recorder (media.recorder.RecorderService) when this node records,
        # and Twilio Video (media.twilio_video.TwilioVideo) when it carries calls.
        self.media = media
        self.video = video
        self.metrics: Any = None  # gateway.metrics.Metrics, set by the app
        # Presence leases in Redis (actors.leases.PresenceLeases), cluster mode only.
        self.presence: Any = None
        self.journal = journal
        self.bus = bus
        self.settings = settings
        self.keys = keys

    @property
    def pool(self) -> Any:
        return self.journal.pool


class Actor:
    """Base class. Subclasses implement `on_<kind>` handlers.

    Hooks run inside the actor's own run loop:
    - `on_activate()` before the first message; if it raises, every waiting
      message fails with `unavailable` and the next message tries again.
    - `on_passivate()` before the actor is dropped from memory; errors are logged.
    """

    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        self.actor_id = actor_id
        self.ctx = ctx
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._cell: ActorCell | None = None

    async def on_activate(self) -> None:
        return None

    async def on_passivate(self) -> None:
        return None

    def is_idle(self) -> bool:
        """May the runtime passivate this actor now? (No timers armed by default.)"""
        return not self._timers

    async def receive(self, msg: Message) -> Any:
        if not msg.kind or msg.kind.startswith("_"):
            raise ProtocolError("bad_request", f"unknown message {msg.kind!r}")
        handler = getattr(self, "on_" + msg.kind.replace(".", "_"), None)
        if handler is None:
            raise ProtocolError("bad_request", f"unknown message {msg.kind!r}")
        return await handler(msg)

    # -- timers: a message to self after a delay ----------------------------

    def set_timer(self, name: str, delay: float, msg: Message) -> None:
        self.cancel_timer(name)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(name, None)
            if self._cell is not None and not self._cell.stopped:
                self._cell.tell(msg)

        self._timers[name] = loop.call_later(max(0.0, delay), fire)

    def cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_all_timers(self) -> None:
        for name in list(self._timers):
            self.cancel_timer(name)


ActorFactory = Callable[[str, ActorContext], Actor]


class ActorCell:
    """An activated actor: its mailbox and its run loop.

    The loop is a task that runs only while there are messages: an idle actor
    holds no task and no waiter, only its (empty) mailbox, which keeps the
    memory of a hosted idle actor small."""

    __slots__ = (
        "_activated",
        "_mailbox",
        "_on_stop",
        "_size",
        "_task",
        "actor",
        "busy",
        "last_active",
        "stopped",
    )

    def __init__(
        self, actor: Actor, mailbox_size: int, on_stop: Callable[[ActorCell], None]
    ) -> None:
        self.actor = actor
        actor._cell = self
        # (message, reply future, trace context of the sender)
        self._mailbox: collections.deque[tuple[Message, asyncio.Future[Any] | None, Any]] = (
            collections.deque()
        )
        self._size = mailbox_size
        self._on_stop = on_stop
        self._activated = False
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        self.busy = False
        self.last_active = time.monotonic()
        # Activate at once (as before): state loads while the first message is on its way.
        self._wake()

    @property
    def depth(self) -> int:
        return len(self._mailbox)

    def post(self, msg: Message) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(msg, fut)
        return fut

    def tell(self, msg: Message) -> None:
        self._put(msg, None)

    def _put(self, msg: Message, fut: asyncio.Future[Any] | None) -> None:
        if self.stopped:
            raise ProtocolError("unavailable", "actor is restarting, try again")
        if len(self._mailbox) >= self._size:
            logger.warning("mailbox full for %s, refusing %s", self.actor.actor_id, msg.kind)
            raise ProtocolError("unavailable", "actor overloaded, try again")
        self._mailbox.append((msg, fut, tracing.current_context()))
        if self._task is None:
            self._wake()

    def _wake(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"actor:{self.actor.actor_id}"
        )

    async def _run(self) -> None:
        try:
            if not self._activated:
                try:
                    await self.actor.on_activate()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("activation of %s failed", self.actor.actor_id)
                    self._stop(ProtocolError("unavailable", "could not load state, try again"))
                    return
                self._activated = True
            mailbox = self._mailbox
            while mailbox and not self.stopped:
                msg, fut, trace_ctx = mailbox.popleft()
                if not await self._handle(msg, fut, trace_ctx):
                    return
        finally:
            self._task = None

    async def _handle(self, msg: Message, fut: asyncio.Future[Any] | None, trace_ctx: Any) -> bool:
        """One message; False when the actor must stop."""
        self.busy = True
        caller = msg.caller
        log_context.correlation_id.set(
            f"{caller.connection_id}/{caller.request_id}"
            if caller is not None and caller.request_id
            else None
        )
        aid = self.actor.actor_id
        log_context.session_id.set(aid[8:] if aid.startswith("session:") else None)
        try:
            with tracing.span(f"enf.actor {msg.kind}", trace_ctx, actor=aid.split(":", 1)[0]):
                result = await self.actor.receive(msg)
        except asyncio.CancelledError:
            _fail(fut, ProtocolError("unavailable", "server shutting down"))
            raise
        except ProtocolError as exc:
            _fail(fut, exc)
        except Unavailable as exc:
            _fail(fut, ProtocolError("unavailable", str(exc)))
        except StaleActivation:
            # Another activation owns the journal now: stop, reload on next message.
            _fail(fut, ProtocolError("unavailable", "state moved, try again"))
            self._stop(ProtocolError("unavailable", "state moved, try again"))
            return False
        except Exception:
            logger.exception("%s failed handling %s", self.actor.actor_id, msg.kind)
            _fail(fut, ProtocolError("internal", "internal error"))
        else:
            if fut is None:
                if isinstance(result, Exception):
                    logger.warning("%s: %s", self.actor.actor_id, result)
            elif not fut.done():
                fut.set_result(result)
        finally:
            self.busy = False
            self.last_active = time.monotonic()
        return True

    def _stop(self, exc: ProtocolError) -> None:
        """Fail everything still queued (pykka's ActorDeadError) and unregister."""
        if self.stopped:
            return
        self.stopped = True
        self._release(exc)

    def cancel(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _release(self, exc: ProtocolError) -> None:
        self.actor.cancel_all_timers()
        while self._mailbox:
            _, fut, _ = self._mailbox.popleft()
            _fail(fut, exc)
        self._on_stop(self)

    async def passivate(self) -> None:
        if self.stopped:
            return
        self.stopped = True  # refuse new messages from here on
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._activated:
            try:
                await self.actor.on_passivate()
            except Exception:
                logger.exception("passivation of %s failed", self.actor.actor_id)
        self._release(ProtocolError("unavailable", "actor stopped"))

    def idle_for(self, now: float) -> float:
        if self.busy or self._mailbox or self._task is not None or not self.actor.is_idle():
            return 0.0
        return now - self.last_active


def _fail(fut: asyncio.Future[Any] | None, exc: Exception) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


class Shard:
    """Hosts many actors; activates them on demand and passivates idle ones."""

    def __init__(self, index: int, factory: Callable[[str], Actor], mailbox_size: int) -> None:
        self.index = index
        self._factory = factory
        self._mailbox_size = mailbox_size
        self.cells: dict[str, ActorCell] = {}

    def cell(self, actor_id: str) -> ActorCell:
        cell = self.cells.get(actor_id)
        if cell is None or cell.stopped:
            cell = ActorCell(self._factory(actor_id), self._mailbox_size, self._forget)
            self.cells[actor_id] = cell
        return cell

    def _forget(self, cell: ActorCell) -> None:
        if self.cells.get(cell.actor.actor_id) is cell:
            del self.cells[cell.actor.actor_id]

    async def passivate_idle(self, older_than: float) -> int:
        now = time.monotonic()
        idle = [c for c in self.cells.values() if c.idle_for(now) >= older_than]
        for c in idle:
            logger.debug("passivating idle %s", c.actor.actor_id)
            await c.passivate()
        return len(idle)

    async def stop(self) -> None:
        for c in list(self.cells.values()):
            await c.passivate()

    def drop_all(self, exc: ProtocolError) -> int:
        """Forget every actor at once, without a snapshot: their state may be
        stale (the shard was fenced). Queued messages fail with `exc`."""
        cells = list(self.cells.values())
        for c in cells:
            c.cancel()
            c._stop(exc)
        return len(cells)


def _time_out(fut: asyncio.Future[Any], actor_id: str, kind: str) -> None:
    if not fut.done():
        logger.error("ask %s %s timed out", actor_id, kind)
        fut.set_exception(ProtocolError("unavailable", "timed out, try again"))


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
        media: Any = None,
        video: Any = None,
        *,
        count: int | None = None,
        indexes: list[int] | None = None,
        remote: ActorHost | None = None,
    ) -> None:
        self.settings = settings
        self.ctx = ActorContext(self, journal, bus, settings, keys, media, video)
        self._factories = factories
        self.count = count or settings.shards
        wanted = range(self.count) if indexes is None else indexes
        self.shards = [Shard(i, self._make, settings.mailbox_size) for i in wanted]
        self._by_index = {s.index: s for s in self.shards}
        self.remote = remote
        self._sweeper: asyncio.Task[None] | None = None

    def _make(self, actor_id: str) -> Actor:
        kind = actor_id.split(":", 1)[0]
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
        fut = self._cell(actor_id, shard).post(msg)
        # A timer handle rather than wait_for: this is every request's path.
        timer = asyncio.get_running_loop().call_later(timeout, _time_out, fut, actor_id, msg.kind)
        try:
            return await fut
        finally:
            timer.cancel()

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

    def is_active(self, actor_id: str) -> bool:
        shard = self.local_shard(actor_id)
        return shard is not None and actor_id in shard.cells

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="passivation-sweeper")

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for shard in self.shards:
            await shard.stop()

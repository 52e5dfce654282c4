"""The machinery that runs actors: a cell (mailbox and run loop) per
activated actor, and shards that activate actors on demand and passivate
idle ones. Hosts (actors.localhost, cluster.shard) are built on these."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from actors.actor import Actor
from config import logging as log_context
from config import tracing
from core.errors import ProtocolError
from core.messages import Message
from persistence.events import Refused, is_outage
from persistence.journal import StaleActivation

logger = logging.getLogger(__name__)

# A tell and its sender's trace context, handed from a stopped cell to the next.
Queued = tuple[Message, Any]
# What handling one message ended with (ActorCell._handle).
_DONE, _AGAIN, _STOP = object(), object(), object()


class ActorCell:
    """An activated actor: its mailbox and its run loop.

    The loop is a task that runs only while there are messages: an idle actor
    holds no task and no waiter, only its (empty) mailbox, which keeps the
    memory of a hosted idle actor small."""

    __slots__ = (
        "_activated",
        "_mailbox",
        "_on_stop",
        "_pause",
        "_size",
        "_task",
        "actor",
        "busy",
        "current",
        "last_active",
        "stopped",
    )

    def __init__(
        self,
        actor: Actor,
        mailbox_size: int,
        on_stop: Callable[[ActorCell, list[Queued]], None],
    ) -> None:
        self.actor = actor
        actor._cell = self
        # (message, reply future, trace context of the sender)
        self._mailbox: collections.deque[tuple[Message, asyncio.Future[Any] | None, Any]] = (
            collections.deque()
        )
        self._size = mailbox_size
        self._on_stop = on_stop
        self._pause = 0.0  # the wait before a tell that met an outage runs again
        self.current: asyncio.Future[Any] | None = None  # the ask being handled
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

    def requeue(self, msg: Message, trace_ctx: Any) -> None:
        """A tell handed over from a stopped cell of the same actor."""
        self._mailbox.append((msg, None, trace_ctx))
        if self._task is None:
            self._wake()

    def _put(self, msg: Message, fut: asyncio.Future[Any] | None) -> None:
        if self.stopped:
            raise ProtocolError("unavailable", "actor is restarting, try again")
        # Backpressure is for requests (asks); messages between actors (tells)
        # are never refused: what sends them is bounded at the edge.
        if fut is not None and len(self._mailbox) >= self._size:
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
                except Exception as exc:
                    outage = is_outage(exc)
                    if outage:  # the database is out of reach: queued tells wait for it
                        logger.warning(
                            "activation of %s failed: database unavailable (%s)",
                            self.actor.actor_id,
                            exc,
                        )
                    else:
                        logger.exception("activation of %s failed", self.actor.actor_id)
                    # An outage passes (try again); state that cannot be
                    # loaded is a fault of ours, which retrying will not mend.
                    error = (
                        ProtocolError("unavailable", "could not load state, try again")
                        if outage
                        else ProtocolError("internal", "internal error")
                    )
                    self._stop(error, keep_tells=outage)
                    return
                self._activated = True
            mailbox = self._mailbox
            while mailbox and not self.stopped:
                msg, fut, trace_ctx = mailbox.popleft()
                if fut is not None and fut.done():
                    continue  # timed out before it started: it never will
                outcome = await self._handle(msg, fut, trace_ctx)
                if outcome is _STOP:
                    return
                if outcome is _AGAIN:  # a tell met an outage: it runs again, in order
                    mailbox.appendleft((msg, fut, trace_ctx))
                    self._pause = min(2.0, max(0.05, self._pause * 2))
                    await asyncio.sleep(self._pause)
                else:
                    self._pause = 0.0
            if not mailbox and not self.stopped and self.actor.disposable():
                self._stop(ProtocolError("unavailable", "actor stopped"))
        finally:
            self._task = None

    async def _handle(
        self, msg: Message, fut: asyncio.Future[Any] | None, trace_ctx: Any
    ) -> object:
        """One message: `_DONE`, `_AGAIN` (a tell to run again after a pause)
        or `_STOP` (the actor must stop)."""
        self.busy = True
        self.current = fut
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
        except Exception as exc:
            return self._failed(exc, msg, fut, trace_ctx)
        else:
            if fut is None:
                if isinstance(result, Exception):
                    logger.warning("%s: %s", self.actor.actor_id, result)
            elif not fut.done():
                fut.set_result(result)
        finally:
            self.busy = False
            self.current = None
            self.last_active = time.monotonic()
        return _DONE

    def _failed(
        self, exc: Exception, msg: Message, fut: asyncio.Future[Any] | None, trace_ctx: Any
    ) -> object:
        """What a handler's exception means for the message and the actor."""
        aid = self.actor.actor_id
        if isinstance(exc, StaleActivation):
            # Another activation owns the journal now: stop, reload on next
            # message (a tell goes to the next activation).
            if fut is None:
                self._mailbox.appendleft((msg, fut, trace_ctx))
            _fail(fut, ProtocolError("unavailable", "state moved, try again"))
            self._stop(ProtocolError("unavailable", "state moved, try again"))
            return _STOP
        if isinstance(exc, Refused):  # logged by the journal; nothing applied
            _fail(fut, ProtocolError("unavailable", str(exc)))
            if fut is None:
                logger.error("%s: %s dropped: %s", aid, msg.kind, exc)
        elif not is_outage(exc):
            logger.error("%s failed handling %s", aid, msg.kind, exc_info=exc)
            _fail(fut, ProtocolError("internal", "internal error"))
        elif fut is None:  # nothing changed: it runs again once the database is back
            logger.warning("%s: %s waits for the database (%s)", aid, msg.kind, exc)
            return _AGAIN
        else:  # the handler changed nothing: the caller may retry
            _fail(fut, ProtocolError("unavailable", str(exc) or "database unavailable"))
        return _DONE

    def _stop(self, exc: ProtocolError, keep_tells: bool = True) -> None:
        """Fail the queued asks (pykka's ActorDeadError), hand the queued
        tells to the next activation (or drop them: `keep_tells` false) and
        unregister."""
        if self.stopped:
            return
        self.stopped = True
        self._release(exc, keep_tells)

    def cancel(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _release(self, exc: ProtocolError, keep_tells: bool, level: int = logging.ERROR) -> None:
        """Fail the queued asks with `exc`; hand the queued tells to the shard."""
        self.actor.cancel_all_timers()
        tells: list[Queued] = []
        while self._mailbox:
            msg, fut, trace_ctx = self._mailbox.popleft()
            if fut is None:
                tells.append((msg, trace_ctx))
            _fail(fut, exc)
        if tells and not keep_tells:
            kinds = ", ".join(sorted({m.kind for m, _ in tells}))
            aid = self.actor.actor_id
            logger.log(level, "%s stopped: %d messages dropped (%s)", aid, len(tells), kinds)
            tells = []
        self._on_stop(self, tells)

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
            except Exception as exc:
                if is_outage(exc):
                    logger.warning(
                        "passivation of %s: database unavailable (%s)", self.actor.actor_id, exc
                    )
                else:
                    logger.exception("passivation of %s failed", self.actor.actor_id)
        # Passivated when idle (nothing queued) or at shutdown: what an actor
        # must learn is recovered from the journal when it next activates.
        self._release(
            ProtocolError("unavailable", "actor stopped"), keep_tells=False, level=logging.WARNING
        )

    def idle_for(self, now: float) -> float:
        if self.busy or self._mailbox or self._task is not None or not self.actor.is_idle():
            return 0.0
        return now - self.last_active


async def answer(cell: ActorCell, fut: asyncio.Future[Any], timeout: float, kind: str) -> Any:
    """The answer to an ask posted to `cell`. After `timeout`, an ask still
    queued is answered `unavailable` and dropped (it will never run: nothing
    applied, PROTOCOL §7); one already running is waited for, since what it
    does is decided by then (a commit in doubt, say) and the caller must hear it."""
    # A timer handle rather than wait_for: this is every request's path.
    timer = asyncio.get_running_loop().call_later(timeout, _late, cell, fut, timeout, kind)
    try:
        return await fut
    finally:
        timer.cancel()


def _late(cell: ActorCell, fut: asyncio.Future[Any], timeout: float, kind: str) -> None:
    if fut.done():
        return
    if cell.current is fut:
        logger.warning("ask %s %s still running after %.0f s", cell.actor.actor_id, kind, timeout)
        return
    logger.warning("ask %s %s not started within %.0f s", cell.actor.actor_id, kind, timeout)
    fut.set_exception(ProtocolError("unavailable", "timed out, try again"))


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
        # Actors whose queued tells wait for the database: how many times in a row.
        self._waits: dict[str, int] = {}
        self._stopping = False

    def cell(self, actor_id: str) -> ActorCell:
        cell = self.cells.get(actor_id)
        if cell is None or cell.stopped:
            cell = ActorCell(self._factory(actor_id), self._mailbox_size, self._forget)
            self.cells[actor_id] = cell
        return cell

    def _forget(self, cell: ActorCell, tells: list[Queued]) -> None:
        aid = cell.actor.actor_id
        if self.cells.get(aid) is cell:
            del self.cells[aid]
        if not tells:
            self._waits.pop(aid, None)
            return
        if self._stopping:
            logger.warning("%s: %d messages not handled at shutdown", aid, len(tells))
            return
        n = self._waits[aid] = self._waits.get(aid, 0) + 1
        delay = min(2.0, 0.05 * 2**n)
        logger.warning("%s: %d messages wait %.2f s for the database", aid, len(tells), delay)
        asyncio.get_running_loop().call_later(delay, self._redeliver, aid, tells)

    def _redeliver(self, actor_id: str, tells: list[Queued]) -> None:
        if self._stopping:
            logger.warning("%s: %d messages not handled at shutdown", actor_id, len(tells))
            return
        cell = self.cell(actor_id)
        for msg, trace_ctx in tells:
            cell.requeue(msg, trace_ctx)

    async def passivate_idle(self, older_than: float) -> int:
        now = time.monotonic()
        idle = [c for c in self.cells.values() if c.idle_for(now) >= older_than]
        for c in idle:
            logger.debug("passivating idle %s", c.actor.actor_id)
            await c.passivate()
        return len(idle)

    def start(self) -> None:
        """Take messages again (after a `stop`: a shard passivated before it moves)."""
        self._stopping = False

    async def stop(self) -> None:
        self._stopping = True
        for c in list(self.cells.values()):
            await c.passivate()

    def drop_all(self, exc: ProtocolError) -> int:
        """Forget every actor at once, without a snapshot: their state may be
        stale (the shard was fenced). Queued messages fail with `exc`."""
        cells = list(self.cells.values())
        for c in cells:
            c.cancel()
            c._stop(exc, keep_tells=False)
        return len(cells)

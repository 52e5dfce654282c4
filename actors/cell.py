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
from persistence.events import is_outage
from persistence.journal import StaleActivation, Unavailable

logger = logging.getLogger(__name__)


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
                except Exception as exc:
                    if is_outage(exc):  # the database is out of reach: the next message retries
                        logger.warning(
                            "activation of %s failed: database unavailable (%s)",
                            self.actor.actor_id,
                            exc,
                        )
                    else:
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
            except Exception as exc:
                if is_outage(exc):
                    logger.warning(
                        "passivation of %s: database unavailable (%s)", self.actor.actor_id, exc
                    )
                else:
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

"""One client WebSocket after authentication.

- Requests: one in flight per (connection, actor), in arrival order; requests
  to different actors run concurrently.
- Following: per topic, the last `seq` delivered. Durable events are sent
  exactly once, in order; a gap (or a follow from an older seq) is filled
  from the journal. While a request to an actor is in flight, that actor's
  topic is paused, so the reply goes out before the events it caused.
- Backpressure: a bounded outbound queue. Ephemeral events are dropped when
  it is full; anything else closes the socket with 1013 (the client resumes
  with `since_seq`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from config import logging as log_context
from config import tracing
from core.clock import now_iso
from core.errors import ErrorCode, ProtocolError
from core.ids import session_address
from core.messages import Caller, Delivery, Message, Reply
from gateway import protocol as P
from gateway.auth import Identity
from gateway.codec import Codec, DecodeError
from gateway.metrics import request_label
from gateway.requests import parse
from gateway.services import Services
from persistence.audit import AuditRecord, resource_of
from persistence.journal import Unavailable

logger = logging.getLogger(__name__)

PRESENCE_TOPIC = "presence"
MAX_IN_FLIGHT = 256
CATCH_UP_PAGE = 256  # journal rows read at a time when replaying to a client


@dataclass(slots=True)
class Follow:
    last_seq: int | None = None  # None until the first follow decision
    paused: int = 0
    catching_up: bool = False
    buffer: list[Delivery] = field(default_factory=list)

    @property
    def flowing(self) -> bool:
        return self.last_seq is not None and not self.paused and not self.catching_up


class RateLimiter:
    """Token bucket (rate/s, burst 2x rate) plus flood detection: a rate of
    10x the limit for `flood_window` whole seconds."""

    def __init__(self, rate: float, flood_window: int = 5) -> None:
        self.rate, self.capacity = rate, rate * 2
        self.tokens, self.stamp = self.capacity, time.monotonic()
        self.window: collections.deque[int] = collections.deque(maxlen=flood_window)
        self.second, self.count = int(self.stamp), 0

    def hit(self) -> tuple[bool, bool]:
        """(allowed, flooding)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        sec = int(now)
        if sec != self.second:
            self.window.append(self.count)
            for _ in range(min(sec - self.second - 1, self.window.maxlen or 0)):
                self.window.append(0)
            self.second, self.count = sec, 0
        self.count += 1
        flooding = (
            len(self.window) == self.window.maxlen
            and all(c >= 10 * self.rate for c in self.window)
            and self.count >= 10 * self.rate
        )
        if self.tokens >= 1:
            self.tokens -= 1
            return True, flooding
        return False, flooding


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        ident: Identity,
        codec: Codec,
        services: Services,
        remote: str | None,
        user_agent: str | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.ident = ident
        self.codec = codec
        self.services = services
        self.remote = remote
        self.user_agent = user_agent
        self.follows: dict[str, Follow] = {}
        self.tracked: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._out: asyncio.Queue[str | bytes] = asyncio.Queue(services.settings.outbound_queue)
        self._limiter = RateLimiter(services.settings.rate_limit)
        self._writer: asyncio.Task[None] | None = None
        self.closing = False
        self.log = logging.LoggerAdapter(
            logger, {"connection_id": self.id, "user_id": ident.user_id}
        )

    # -- output --------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer:{self.id}")

    async def _write_loop(self) -> None:
        try:
            out = self._out
            while True:
                frame = await out.get()
                while True:  # everything already queued, without a wake-up per frame
                    try:
                        if isinstance(frame, bytes):
                            await self.ws.send_bytes(frame)
                        else:
                            await self.ws.send_str(frame)
                    finally:
                        out.task_done()
                    if out.empty():
                        break
                    frame = out.get_nowait()
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the read loop notices too

    def send(self, msg: dict[str, Any], *, droppable: bool = False) -> None:
        if self.closing:
            return
        try:
            self._out.put_nowait(self.codec.encode(msg))
        except asyncio.QueueFull:
            if droppable:
                self.services.metrics.outbound_dropped.inc()
                return
            self.services.metrics.slow_clients.inc()
            self.log.warning("client too slow: outbound queue full, closing with 1013")
            self.close_soon(P.CLOSE_TOO_SLOW, "too slow: resume with since_seq")

    def close_soon(self, code: int, message: str) -> None:
        if self.closing:
            return
        self.closing = True
        self._spawn(self._close(code, message))

    async def _close(self, code: int, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode())

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until queued frames are written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._out.join(), timeout)

    # -- bus subscriber --------------------------------------------------------

    def deliver(self, d: Delivery) -> None:
        if d.seq is None:
            if d.to_user is not None and d.to_user != self.ident.user_id:
                return
            self.send(d.event, droppable=True)
            return
        f = self.follows.get(d.topic)
        if f is None:
            return
        if f.flowing:
            self._emit(d.topic, f, d)
        else:
            f.buffer.append(d)

    def _emit(self, topic: str, f: Follow, d: Delivery) -> None:
        assert f.last_seq is not None and d.seq is not None
        if d.seq <= f.last_seq:
            return
        if d.seq == f.last_seq + 1:
            f.last_seq = d.seq
            self.send(d.event)
            return
        # A gap (a lossy bus, or events committed before we subscribed): re-read.
        f.buffer.append(d)
        f.catching_up = True
        self._spawn(self._catch_up(topic, f))

    def _flush(self, topic: str, f: Follow) -> None:
        buffered, f.buffer = sorted(f.buffer, key=lambda d: d.seq or 0), []
        for i, d in enumerate(buffered):
            if not f.flowing:  # a gap started a catch-up: keep the rest for it
                f.buffer.extend(buffered[i:])
                return
            self._emit(topic, f, d)

    async def _catch_up(self, topic: str, f: Follow) -> None:
        """Send what the journal has after `f.last_seq`, page by page, waiting
        for room in the outbound queue (a long absence is not "too slow"); then
        what was buffered meanwhile. The caller has set `f.catching_up`."""
        assert f.last_seq is not None
        try:
            stuck_at = None
            while True:
                page = await self.services.journal.read(topic, f.last_seq, CATCH_UP_PAGE)
                for e in page:
                    if e.seq == f.last_seq + 1:
                        f.last_seq = e.seq
                        await self._send_waiting(e.wire())
                if self.closing:
                    return
                # Live events already sent from the journal are dropped; too many
                # buffered are dropped too: the journal has them all.
                f.buffer = [d for d in f.buffer if (d.seq or 0) > f.last_seq]
                if len(f.buffer) > self.services.settings.outbound_queue:
                    f.buffer.clear()
                if len(page) == CATCH_UP_PAGE:
                    continue
                if not f.buffer or min(d.seq or 0 for d in f.buffer) == f.last_seq + 1:
                    break
                # Buffered events are ahead of what the journal showed: what lies
                # between was committed meanwhile; read again, once more at most.
                if stuck_at == f.last_seq:
                    self.log.error("cannot fill a gap after seq %d on %s", f.last_seq, topic)
                    self.close_soon(P.CLOSE_TOO_SLOW, "event gap: resume with since_seq")
                    return
                stuck_at = f.last_seq
        except Unavailable:
            self.log.warning("journal unavailable while catching up %s", topic)
            self.close_soon(P.CLOSE_TOO_SLOW, "could not replay events: resume with since_seq")
            return
        finally:
            f.catching_up = False
        if not f.paused:
            self._flush(topic, f)

    async def _send_waiting(self, msg: dict[str, Any]) -> None:
        """Queue a frame, waiting for room (a replay, not a live event)."""
        if not self.closing:
            await self._out.put(self.codec.encode(msg))

    def _pause(self, topic: str, create: bool) -> bool:
        """Hold a topic's events; returns whether this call created the follow."""
        f = self.follows.get(topic)
        created = False
        if f is None:
            if not create:
                return False
            f = self.follows[topic] = Follow()
            self.services.bus.subscribe(topic, self)
            created = True
        f.paused += 1
        return created

    async def _resume(self, topic: str, after: int | None, head: int | None, created: bool) -> None:
        """Release a pause. With `after`, (re)position the follow there: events
        after it are sent, from the journal unless `head` says none are missing."""
        f = self.follows.get(topic)
        if f is None:
            return
        f.paused -= 1
        if after is not None and (f.last_seq is None or after < f.last_seq):
            f.last_seq = after
            if not f.paused and (head is None or after < head) and not f.catching_up:
                f.catching_up = True
                await self._catch_up(topic, f)
                return
        if f.last_seq is None:
            if created and not f.paused:
                self.unfollow(topic)
            return
        if not f.paused and not f.catching_up:
            self._flush(topic, f)

    def unfollow(self, topic: str) -> None:
        if self.follows.pop(topic, None) is not None:
            self.services.bus.unsubscribe(topic, self)

    # -- input ----------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> None:
        """Handle one data frame; never raises."""
        allowed, flooding = self._limiter.hit()
        if flooding:
            self.log.warning("sustained flooding, closing with 4429")
            self.close_soon(P.CLOSE_FLOOD, "flooding")
            return
        try:
            msg = self.codec.decode(raw)
        except DecodeError as exc:
            self._refuse(None, "bad_request", str(exc))
            return
        if not isinstance(msg, dict):
            self._refuse(None, "bad_request", "a frame must be an object")
            return
        rid = msg.get("id")
        if (
            rid is None
            or not isinstance(rid, str | int)
            or isinstance(rid, bool)
            or (isinstance(rid, str) and not 0 < len(rid) <= 128)
        ):
            self._refuse(None, "bad_request", "a request needs an id (string or integer)")
            return
        kind = msg.get("type")
        if not isinstance(kind, str):
            self._refuse(rid, "bad_request", "a request needs a type")
            return
        if not allowed:
            self._refuse(rid, "rate_limited", "too many requests; slow down")
            return
        user_limit = self.services.user_limit
        if user_limit is not None and not user_limit.allow(self.ident.user_id):
            self._refuse(rid, "rate_limited", "too many requests from this user; slow down")
            return
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self._refuse(rid, "rate_limited", "too many requests in flight")
            return
        if kind == "ping":
            self.send(P.reply_ok(rid, {"server_time": now_iso()}))
            return
        if self.services.shutting_down:
            self._refuse(rid, "unavailable", "server shutting down: retry after reconnecting", kind)
            return
        try:
            spec, data, actor = parse(kind, msg.get("data"), self.ident)
        except ProtocolError as exc:
            # Audited against the session it named, if it named one.
            named = msg.get("data")
            sid = named.get("session_id") if isinstance(named, dict) else None
            target = session_address(sid[:64]) if isinstance(sid, str) and sid else None
            self._refuse(rid, exc.code, exc.message, kind, target)
            return
        self._spawn(self._request(rid, kind, spec.kind or kind, data, actor))

    def _refuse(
        self,
        rid: Any,
        code: ErrorCode,
        message: str,
        kind: str | None = None,
        actor: str | None = None,
    ) -> None:
        self.log.info("refused %s: %s %s", kind or "frame", code, message)
        self.send(P.reply_error(rid, code, message))
        self._audit(kind or "frame", rid, "error" if code == "internal" else "refused", actor, code)

    def _audit(
        self, kind: str, rid: Any, outcome: str, actor: str | None, code: str | None = None
    ) -> None:
        resource_type, resource_id = resource_of(actor) if actor else (None, None)
        self.services.metrics.requests.labels(request_label(kind), outcome).inc()
        self.services.audit.record(
            AuditRecord(
                event_type="ws.request",
                action=kind,
                outcome=outcome,
                correlation_id=f"{self.id}/{rid}",
                user_id=self.ident.user_id,
                ip_address=self.remote,
                user_agent=self.user_agent,
                resource_type=resource_type,
                resource_id=resource_id,
                error_code=code,
                metadata={"role": self.ident.role},
            )
        )

    async def _request(
        self, rid: Any, kind: str, msg_kind: str, data: dict[str, Any], actor: str
    ) -> None:
        started = time.perf_counter()
        log_context.connection_id.set(self.id)
        log_context.correlation_id.set(f"{self.id}/{rid}")
        log_context.session_id.set(actor.split(":", 1)[1] if actor.startswith("session:") else None)
        lock = self._locks.setdefault(actor, asyncio.Lock())
        async with lock:
            # The topic this request may start following is subscribed before the
            # ask, so nothing published while it runs is missed.
            pre = {"session.join": actor, "session.request": actor, "presence.online": actor}.get(
                kind
            )
            paused = [t for t in {actor, pre} if t and (t == pre or t in self.follows)]
            created = {t: self._pause(t, create=t == pre) for t in paused}
            if kind == "presence.subscribe":
                self.services.bus.subscribe(PRESENCE_TOPIC, self)
            waits = [t for t in paused if created[t]]
            if kind == "presence.subscribe":
                waits.append(PRESENCE_TOPIC)
            for t in waits:
                await self._subscribed(t)
            leases = self.services.leases
            if kind == "presence.online" and leases is not None:
                await leases.hold(actor.split(":", 1)[1], self.id)
            caller = Caller(
                self.ident.user_id,
                self.ident.role,
                self.id,
                str(rid),
                self.ident.kyc_verified,
                self.ident.claims,
            )
            reply: Reply | None = None
            try:
                with tracing.span(f"enf.request {kind}", None, type=kind, actor=actor):
                    result = await self.services.host.ask(actor, Message(msg_kind, data, caller))
                reply = result if isinstance(result, Reply) else Reply(result or {})
            except ProtocolError as exc:
                self._refuse(rid, exc.code, exc.message, kind, actor)
            except Exception:
                self.log.exception("request %s failed", kind)
                self._refuse(rid, "internal", "internal error", kind, actor)
            if reply is None:
                if kind == "presence.subscribe":
                    self.services.bus.unsubscribe(PRESENCE_TOPIC, self)
                if kind == "presence.online" and leases is not None and actor not in self.tracked:
                    await leases.release(actor.split(":", 1)[1], self.id)
                for t in paused:
                    await self._resume(t, None, None, created[t])
                return
            self.send(P.reply_ok(rid, reply.data))
            self.services.metrics.request_seconds.labels(request_label(kind)).observe(
                time.perf_counter() - started
            )
            self._audit(kind, rid, "ok", actor)
            if reply.track:
                self.tracked.add(actor)
            for t in paused:
                await self._resume(t, reply.follow.pop(t, None), reply.heads.get(t), created[t])
            for t, after in reply.follow.items():  # topics found only in the reply
                created_now = self._pause(t, create=True)
                if created_now:
                    await self._subscribed(t)
                await self._resume(t, after if after is not None else 0, None, created_now)

    async def _subscribed(self, topic: str) -> None:
        """With a bus across processes, wait for the subscription to hold
        before asking: events the request causes must not go past us."""
        if not await self.services.bus.subscribed(topic):
            self.log.warning("subscription to %s not confirmed in time", topic)

    def in_flight(self) -> list[asyncio.Task[None]]:
        return [t for t in self._tasks if not t.done()]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- end ----------------------------------------------------------------

    async def finish(self) -> None:
        """The socket is gone: stop following and tell the actors that track it."""
        self.closing = True
        for topic in list(self.follows):
            self.unfollow(topic)
        self.services.bus.unsubscribe(PRESENCE_TOPIC, self)
        for actor in self.tracked:
            self.services.host.tell(
                actor,
                Message("conn_closed", {"connection_id": self.id, "user_id": self.ident.user_id}),
            )
        leases = self.services.leases
        if leases is not None:
            for actor in self.tracked:
                if actor.startswith("notary:"):
                    await leases.release(actor.split(":", 1)[1], self.id)
        for task in list(self._tasks):
            task.cancel()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

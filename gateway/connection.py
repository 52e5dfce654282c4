"""One client WebSocket after authentication: the transport.

- Requests: one in flight per (connection, actor), in arrival order; requests
  to different actors run concurrently. What is done around a request (follow
  its target first, subscribe to a topic, hold a presence lease, answer it
  here) is what its spec says (`gateway.specs`): the connection never looks
  at request types.
- Following: the topics followed, events in order, exactly once (`gateway.following`).
- Backpressure: a bounded outbound queue. Ephemeral events are dropped when
  it is full; anything else closes the socket with 1013 (the client resumes
  with `since_seq`). Its writer task runs only while frames wait: started by
  the first frame queued, it ends once the queue is empty.
- An idle connection holds little (bench/conn_memory.py): what a request,
  a follow, a refusal or a log line needs is made when first needed.
- Its token: at the token's `exp` (`gateway.expiry`: one timer for all),
  the socket is closed with 4401; from then on (as once any close has begun) frames are not read.
- Limits: the request rate (`cluster.ratelimit.RateLimiter`), requests in
  flight, and the server's (`gateway.limits`); its audit rows go through
  `gateway.ws_audit` (refusals beyond a burst are summarised).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from cluster.ratelimit import RateLimiter
from config import logging as log_context
from config import tracing
from core.errors import ErrorCode, ProtocolError
from core.ids import is_request_id
from core.loops import STOP_TIMEOUT_S, stop_task
from core.messages import Caller, Message, Reply
from gateway import protocol as P
from gateway.auth import Identity
from gateway.codec import Codec, DecodeError
from gateway.expiry import expiries
from gateway.following import Following
from gateway.keyed_locks import KeyedLocks
from gateway.metrics import request_label
from gateway.outbound import Outbound, Sender
from gateway.requests import REQUESTS, parse_as
from gateway.services import Services
from gateway.specs import Spec, named_session
from gateway.ws_audit import ConnectionAudit

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256


BAD_ID = "a request needs an id: 1-128 characters, no NUL or unpaired surrogate (or an integer)"


def _valid_id(rid: object) -> bool:
    """A request id (PROTOCOL §8: no NUL, no unpaired surrogate, at most 128
    characters): a string, not empty; or, as always accepted, an integer."""
    if isinstance(rid, str):
        return bool(rid) and is_request_id(rid)
    return isinstance(rid, int) and not isinstance(rid, bool)


class Connection(Sender):
    def __init__(
        self,
        ws: web.WebSocketResponse,
        ident: Identity,
        codec: Codec,
        services: Services,
        remote: str | None,
        user_agent: str | None = None,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.ident = ident
        self.codec = codec
        self.services = services
        self.remote = remote
        self.user_agent = user_agent
        self.closing = False
        self.transport = transport
        self.heard = True  # for gateway.heartbeat
        # Made when first needed (an idle connection has none of them):
        self.tracked: set[str] | None = None  # actors told when this connection closes
        self.leased: set[str] | None = None  # actors whose presence lease it holds
        self._following: Following | None = None
        self._locks: KeyedLocks | None = None  # one request in flight per actor
        self._tasks: set[asyncio.Task[None]] | None = None
        self._out: Outbound | None = None  # frames not written yet, while there are
        self._limiter: RateLimiter | None = None
        self._audit: ConnectionAudit | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger naming the connection and its user (made per use: rare)."""
        return logging.LoggerAdapter(
            logger, {"connection_id": self.id, "user_id": self.ident.user_id}
        )

    @property
    def following(self) -> Following:
        f = self._following
        if f is None:
            s = self.services
            bound = s.settings.outbound_queue
            f = self._following = Following(self, self.ident.user_id, s.bus, s.journal, bound)
        return f

    @property
    def locks(self) -> KeyedLocks:
        locks = self._locks
        if locks is None:
            locks = self._locks = KeyedLocks()
        return locks

    @property
    def audit(self) -> ConnectionAudit:
        audit = self._audit
        if audit is None:
            audit = self._audit = ConnectionAudit(self)
        return audit

    # -- output --------------------------------------------------------------

    def start(self) -> None:
        exp = self.ident.expires_at
        if exp is not None:
            expiries().add(exp, self)  # one timer for every connection of the loop

    def expired(self) -> None:
        """Its token reached `exp`."""
        self.log.info("token expired: closing with 4401")
        self.close_soon(P.CLOSE_BAD_TOKEN, "token expired: reconnect with a fresh token")

    # -- input ----------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> None:
        """Handle one data frame; never raises. Once closing (an expired
        token, a flood, a slow reader), nothing more is done."""
        if self.closing:
            return
        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = RateLimiter(self.services.settings.rate_limit)
        allowed, flooding = limiter.hit()
        if flooding:
            self.log.warning("sustained flooding, closing with 4429")
            self.close_soon(P.CLOSE_FLOOD, "flooding")
            return
        frame = self._envelope(raw)
        if frame is None or not self._admit(frame[1], allowed):
            return
        msg, rid, kind = frame
        spec = REQUESTS.get(kind)
        if spec is not None and spec.answer is not None:
            self.send(P.reply_ok(rid, spec.answer()))
            return
        if self.services.shutting_down:
            self._refuse(rid, "unavailable", "server shutting down: retry after reconnecting", kind)
            return
        try:
            spec, data, actor = parse_as(spec, kind, msg.get("data"), self.ident)
        except ProtocolError as exc:
            # Audited against the session it named, if it named one.
            self._refuse(rid, exc.code, exc.message, kind, named_session(msg.get("data")))
            return
        self.spawn(self._request(rid, spec, data, actor))

    def _envelope(self, raw: str | bytes) -> tuple[dict[str, Any], Any, str] | None:
        """The frame as (message, request id, request type), or None once refused."""
        try:
            msg = self.codec.decode(raw)
        except DecodeError as exc:
            self._refuse(None, "bad_request", str(exc))
            return None
        if not isinstance(msg, dict):
            self._refuse(None, "bad_request", "a frame must be an object")
            return None
        rid = msg.get("id")
        if not _valid_id(rid):
            self._refuse(None, "bad_request", BAD_ID)
            return None
        kind = msg.get("type")
        if not isinstance(kind, str):
            self._refuse(rid, "bad_request", "a request needs a type")
            return None
        return msg, rid, kind

    def _admit(self, rid: Any, allowed: bool) -> bool:
        """Whether the limits let a request in (else it is refused)."""
        if not allowed:
            self.services.limits.refused("ws_rate")
            self._refuse(rid, "rate_limited", "too many requests; slow down")
            return False
        user_limit = self.services.user_limit
        if user_limit is not None and not user_limit.allow(self.ident.user_id):
            self.services.limits.refused("ws_user_rate")
            self._refuse(rid, "rate_limited", "too many requests from this user; slow down")
            return False
        if self._tasks is not None and len(self._tasks) >= MAX_IN_FLIGHT:
            self.services.limits.refused("ws_in_flight")
            self._refuse(rid, "rate_limited", "too many requests in flight")
            return False
        return True

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
        self.audit.refused(kind or "frame", rid, actor, code)

    # -- one request ------------------------------------------------------------

    async def _request(self, rid: Any, spec: Spec, data: dict[str, Any], actor: str) -> None:
        started = time.perf_counter()
        log_context.connection_id.set(self.id)
        log_context.correlation_id.set(f"{self.id}/{rid}")
        log_context.session_id.set(actor.split(":", 1)[1] if actor.startswith("session:") else None)
        async with self.locks.hold(actor):
            paused, created = await self._prepare(spec, actor)
            reply = await self._ask(rid, spec, data, actor)
            if reply is None:
                await self._undo(spec, actor, paused, created)
                return
            self.send(P.reply_ok(rid, reply.data))
            self.services.metrics.observe_request(
                request_label(spec.name), time.perf_counter() - started
            )
            self.audit.request(spec.name, rid, "ok", actor)
            if reply.track:
                self.tracked = (self.tracked or set()) | {actor}
            if spec.holds_lease:
                self.leased = (self.leased or set()) | {actor}
            if paused:
                await self.following.resume(
                    actor, reply.follow.pop(actor, None), reply.heads.get(actor), created
                )
            for topic, after in reply.follow.items():  # topics found only in the reply
                await self.following.follow(topic, after)

    async def _prepare(self, spec: Spec, actor: str) -> tuple[bool, bool]:
        """Before the ask: pause the target's topic (following it first if the
        spec says so, subscribed before the ask so nothing published while it
        runs is missed), subscribe, take a lease. Returns (paused, created)."""
        first = spec.follows_target_first
        paused = first or (self._following is not None and actor in self._following.follows)
        created = False
        if paused or spec.subscribes is not None:  # else no Following is made for it
            following = self.following
            created = paused and following.pause(actor, create=first)
            if spec.subscribes is not None:
                following.subscribe(spec.subscribes)
            if created:
                await following.subscribed(actor)
            if spec.subscribes is not None:
                await following.subscribed(spec.subscribes)
        leases = self.services.leases
        if spec.holds_lease and leases is not None:
            await leases.hold(actor.split(":", 1)[1], self.id)
        return paused, created

    async def _ask(self, rid: Any, spec: Spec, data: dict[str, Any], actor: str) -> Reply | None:
        """The actor's reply, or None once the request is refused."""
        ident = self.ident
        caller = Caller(
            ident.user_id, ident.role, self.id, str(rid), ident.kyc_verified, ident.claims
        )
        services = self.services
        gate: contextlib.AbstractAsyncContextManager[None] = (
            services.limits.open_request(services.pool, ident, actor)
            if spec.opens_request
            else contextlib.nullcontext()
        )
        try:
            with tracing.span(spec.span, None, type=spec.name, actor=actor):
                async with gate:
                    result = await services.host.ask(actor, Message(spec.message, data, caller))
            return result if isinstance(result, Reply) else Reply(result or {})
        except ProtocolError as exc:
            self._refuse(rid, exc.code, exc.message, spec.name, actor)
        except Exception:
            self.log.exception("request %s failed", spec.name)
            self._refuse(rid, "internal", "internal error", spec.name, actor)
        return None

    async def _undo(self, spec: Spec, actor: str, paused: bool, created: bool) -> None:
        """A refused request gives back what `_prepare` took."""
        if spec.subscribes is not None:
            self.following.unsubscribe(spec.subscribes)
        leases = self.services.leases
        if spec.holds_lease and leases is not None and actor not in (self.leased or ()):
            await leases.release(actor.split(":", 1)[1], self.id)
        if paused:
            await self.following.resume(actor, None, None, created)

    def in_flight(self) -> list[asyncio.Task[None]]:
        return [t for t in self._tasks or () if not t.done()]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task of this connection (kept until it ends)."""
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        tasks = self._tasks
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                self._tasks = None

    def still_open(self, hosted: Callable[[str], bool]) -> None:
        """The actors `hosted` by a restarted shard lost the connections they
        knew: those that tracked this one learn it is still open."""
        data = {"connection_id": self.id, "user_id": self.ident.user_id, "role": self.ident.role}
        for actor in self.tracked or ():
            if hosted(actor):
                self.services.host.tell(actor, Message("conn_alive", data))

    # -- heartbeat (gateway.heartbeat) ----------------------------------------

    async def ping(self) -> None:
        """A WebSocket ping; never waits on a peer that does not read (its
        ping is queued behind what it has not taken yet)."""
        if self.closing or self.ws.closed:
            return
        transport = self.transport
        if transport is not None and transport.is_closing():
            return
        if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
            self.spawn(self._send_ping())
        else:
            await self._send_ping()

    async def _send_ping(self) -> None:
        try:
            await self.ws.ping()
        except (ConnectionError, RuntimeError) as exc:
            self.cut(f"ping failed: {exc!r}")

    def cut(self, reason: str) -> None:
        """Drop the socket without a close handshake (the peer is not there)."""
        self.log.info("cutting the socket: %s", reason)
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # -- end ----------------------------------------------------------------

    async def finish(self) -> None:
        """The socket is gone: stop following and tell the actors that track it."""
        self.closing = True
        if self.ident.expires_at is not None:
            expiries().discard(self)
        if self._audit is not None:
            self._audit.close()
        if self._following is not None:
            self._following.close()
        for actor in self.tracked or ():
            self.services.host.tell(
                actor,
                Message("conn_closed", {"connection_id": self.id, "user_id": self.ident.user_id}),
            )
        leases = self.services.leases
        try:
            if leases is not None:
                for actor in self.leased or ():
                    await leases.release(actor.split(":", 1)[1], self.id)
        finally:  # cancelled (shutdown) or not, no task of this socket outlives it
            for task in list(self._tasks or ()):
                task.cancel()
            if self._out is not None:
                await stop_task(self._out.task, STOP_TIMEOUT_S)

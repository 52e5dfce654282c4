"""A client that survives dropped sockets and expiring tokens (PROTOCOL §3,
§7, §8), for apps, tools and the server's own tests and benchmarks.

    async def token() -> str: ...            # a fresh JWT from your backend

    async with ResilientClient(url, token) as c:
        reply = await c.call("session.request", {"document": {...}})
        event = await c.expect("session.state", state="ENP_ASSIGNED")

What it does for you:
- asks `token_provider` for a token on every connect, and reconnects with a
  fresh one `refresh_margin_s` before the current one's `exp` (the server
  closes a connection whose token expired with 4401);
- reconnects after any drop with jittered exponential backoff;
- after a reconnect, follows again what it followed: every session
  (`session.join` with `since_seq` = the last seq it saw) and, for a notary
  that was online, its own topic (`presence.online` with `since_seq`);
- delivers each durable event once, in order: a `(topic, seq)` it has seen
  is dropped (ephemeral events have no seq and always pass);
- sends a request still unanswered when the socket dropped again, with the
  same id and data: the server answers an applied request with its first
  reply (docs/design.md), so nothing is applied twice;
- gives `session.request` an idempotency key when it has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from enf_client.codec import Codec, codec_named
from enf_client.connection import reply_data, send_frame, take_event
from enf_client.tokens import claim, token_expiry

logger = logging.getLogger(__name__)

TokenProvider = Callable[[], Awaitable[str]]
FINAL_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED"})
# Closes after which connecting again cannot help (PROTOCOL §8): a protocol
# violation, a frame over the limit. 4401 (token refused or expired) is
# retried with a fresh token; 1001, 1013, 4408, 4429 and drops with backoff.
FATAL_CLOSES = frozenset({1009, 4400})


def backoff(attempt: int, base: float, cap: float) -> float:
    """Full jitter: uniform(0, min(cap, base * 2^attempt))."""
    return random.uniform(0, min(cap, base * 2**attempt))


class ResilientClient:
    def __init__(
        self,
        url: str,
        token_provider: TokenProvider,
        *,
        codec: str = "json",
        refresh_margin_s: float = 30.0,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.token_provider = token_provider
        self.codec: Codec = codec_named(codec)
        self.refresh_margin_s = refresh_margin_s
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self._own_session = session is None
        self._session = session
        self.welcome: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []  # every event delivered, in order, once
        self.duplicates_dropped = 0
        self.connects = 0  # connections opened (1 + reconnects)
        self.last_seq: dict[str, int] = {}  # topic -> last seq delivered
        self.sessions: set[str] = set()  # session ids followed
        self.online_notary: str | None = None  # set by presence.online
        self.away = False  # presence.set away (set again after a re-online)
        self.subscribed = False  # presence.subscribe (sent again after a reconnect)
        self._fresh_token: str | None = None  # fetched by the refresh, for the next socket
        self.close_codes: list[int | None] = []  # of each socket closed, in order
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]  # ids stay unique across this client's sockets
        self._inbox: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._up = asyncio.Event()
        self._closing = False
        self._fatal: BaseException | None = None
        self._runner: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    async def __aenter__(self) -> ResilientClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- lifecycle ---------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> dict[str, Any]:
        """Connect (retrying) and return the server's `welcome`."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._runner = asyncio.create_task(self._run())
        await self._wait_up(timeout)
        assert self.welcome is not None
        return self.welcome

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("client closed"))
        if self._own_session and self._session is not None:
            await self._session.close()

    async def drop(self) -> None:
        """Close the current socket as a network fault would (tests, tools):
        the client reconnects and resumes."""
        if self._ws is not None:
            await self._ws.close(code=4000)

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener` with each event delivered (after dedupe)."""
        self._listeners.append(listener)

    # -- requests ----------------------------------------------------------

    async def request(
        self, type_: str, data: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send a request; return its reply (ok or not). Sent again, same id,
        after each reconnect until it is answered or `timeout` passes."""
        data = dict(data or {})
        if type_ == "session.request" and "idempotency_key" not in data:
            data["idempotency_key"] = str(uuid.uuid4())
        rid = self._new_id()
        frame = {"id": rid, "type": type_, "data": data}
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (frame, fut)
        try:
            async with asyncio.timeout(timeout):
                if self._up.is_set():
                    await self._send(frame)  # else: sent by the resume
                reply = await fut
        finally:
            self._pending.pop(rid, None)
        if reply.get("ok"):
            self._follow_from(type_, data, reply.get("data") or {})
        return reply

    async def call(
        self, type_: str, data: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """`request`, returning the reply's data or raising RequestFailed."""
        return reply_data(await self.request(type_, data, timeout=timeout))

    async def expect(
        self,
        name: str | None = None,
        *,
        topic: str | None = None,
        timeout: float = 10.0,
        **match: Any,
    ) -> dict[str, Any]:
        """Take the first event not yet taken with this name, topic and data fields."""

        async with asyncio.timeout(timeout):
            while (found := take_event(self._inbox, name, topic, match)) is None:
                self._changed.clear()
                await self._changed.wait()
        return found

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds, asking again after every frame."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def follow(self, session_id: str) -> None:
        """Follow a session from now on, across reconnects (`session.join`
        does this by itself)."""
        self.sessions.add(session_id)

    def _follow_from(self, type_: str, data: dict[str, Any], reply: dict[str, Any]) -> None:
        if type_ in ("session.request", "offer.accept") and "session_id" in reply:
            self.sessions.add(reply["session_id"])
        elif type_ == "session.join":
            self.sessions.add(data["session_id"])
            if data.get("since_seq") is None:  # no replay: we stand where the snapshot does
                topic, head = f"session:{data['session_id']}", reply["session"]["seq"]
                self.last_seq[topic] = max(self.last_seq.get(topic, 0), head)
        elif type_ == "presence.online" and self.welcome is not None:
            self.online_notary, self.away = self.welcome["user_id"], False
        elif type_ == "presence.set":
            self.away = data.get("status") == "away"
        elif type_ == "presence.offline":
            self.online_notary, self.away = None, False
        elif type_ == "presence.subscribe":
            self.subscribed = True

    # -- the connection loop ----------------------------------------------

    async def _wait_up(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not self._up.is_set():
                if self._fatal is not None:
                    raise self._fatal
                if self._runner is not None and self._runner.done():
                    self._runner.result()
                self._changed.clear()
                await self._changed.wait()

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                lived = await self._connection()
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                logger.info("connect to %s failed: %r", self.url, exc)
                lived = False
            except Exception:  # the token provider's own error, a frame it cannot read
                logger.warning("connection to %s failed; trying again", self.url, exc_info=True)
                lived = False
            if self._closing or self._fatal is not None:
                break
            attempt = 0 if lived else attempt + 1
            await asyncio.sleep(backoff(attempt, self.backoff_base_s, self.backoff_cap_s))
        self._changed.set()

    async def _connection(self) -> bool:
        """One socket, from connect to close; True if it got as far as welcome."""
        assert self._session is not None
        token, self._fresh_token = self._fresh_token or await self.token_provider(), None
        ws = await self._session.ws_connect(
            self.url,
            protocols=(self.codec.name,),
            headers={"Authorization": f"Bearer {token}"},
            heartbeat=None,
            max_msg_size=0,
        )
        self._ws, self.connects = ws, self.connects + 1
        refresher = asyncio.create_task(self._refresh_before_expiry(ws, token))
        welcomed, resumer = False, None
        try:
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                frame = self.codec.decode(msg.data)
                if frame.get("type") == "welcome":
                    self.welcome, welcomed = frame["data"], True
                    resumer = asyncio.create_task(self._resume(ws))
                elif frame.get("type") == "event":
                    self._deliver(frame)
                elif "re" in frame:
                    pending = self._pending.get(frame["re"])
                    if pending is not None and not pending[1].done():
                        pending[1].set_result(frame)
        finally:
            refresher.cancel()
            if resumer is not None:
                resumer.cancel()
            self._up.clear()
            self.close_codes.append(ws.close_code)
            if ws.close_code in FATAL_CLOSES:
                self._fatal = ConnectionError(f"closed by the server with {ws.close_code}")
            self._changed.set()
        logger.info("socket closed (%s); resuming", ws.close_code)
        return welcomed

    async def _resume(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Follow again what this client followed, then send what is unanswered."""
        try:
            for sid in sorted(self.sessions):
                since = self.last_seq.get(f"session:{sid}", 0)
                reply = await self._call_on(
                    ws, "session.join", {"session_id": sid, "since_seq": since}
                )
                code = (reply.get("error") or {}).get("code")
                if code == "unavailable":  # a shard moving, the database away: later
                    await ws.close(code=4000)
                    return
                state = ((reply.get("data") or {}).get("session") or {}).get("state")
                if code is not None or state in FINAL_STATES:
                    self.sessions.discard(sid)  # nothing more will come
            if self.online_notary is not None:
                # With no event seen on the topic yet, from its start: an offer
                # made while the socket was down is not missed (the reply to
                # presence.online carries no seq to resume from).
                since = self.last_seq.get(f"notary:{self.online_notary}", 0)
                await self._call_on(ws, "presence.online", {"since_seq": since})
                if self.away:
                    await self._call_on(ws, "presence.set", {"status": "away"})
            if self.subscribed:
                await self._call_on(ws, "presence.subscribe", {})
            self._up.set()
            self._changed.set()
            for frame, fut in list(self._pending.values()):
                if not fut.done():
                    await self._send(frame)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            logger.info("resume interrupted: %r", exc)  # the next socket resumes
        except TimeoutError:  # a re-join unanswered: this socket is of no use
            logger.info("resume unanswered; reconnecting")
            await ws.close(code=4000)

    def _new_id(self) -> str:
        """An id unique over this client's sockets (a retry by id is recognised)."""
        return f"{self._prefix}-{next(self._ids)}"

    async def _call_on(
        self, ws: aiohttp.ClientWebSocketResponse, type_: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        rid = self._new_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = ({"id": rid, "type": type_, "data": data}, fut)
        try:
            await send_frame(ws, self.codec, self._pending[rid][0])
            return await asyncio.wait_for(fut, 30)
        finally:
            self._pending.pop(rid, None)

    async def _refresh_before_expiry(self, ws: aiohttp.ClientWebSocketResponse, token: str) -> None:
        """Shortly before the token expires (the margin, at most a quarter of
        its lifetime), a new socket with a fresh one; a provider with nothing
        fresher leaves this socket until the server closes it (4401)."""
        exp, iat = token_expiry(token), claim(token, "iat")
        if exp is None:
            return
        margin = (
            self.refresh_margin_s if iat is None else min(self.refresh_margin_s, (exp - iat) / 4)
        )
        await asyncio.sleep(max(0.0, exp - margin - time.time()))
        fresh = await self.token_provider()
        if (token_expiry(fresh) or 0.0) <= exp:
            logger.info("token expires at %s and the provider has no fresher one", exp)
            return
        logger.info("token expires at %s: reconnecting with a fresh one", exp)
        self._fresh_token = fresh
        await ws.close(code=1000)

    def _deliver(self, event: dict[str, Any]) -> None:
        seq, topic = event.get("seq"), event.get("topic")
        if isinstance(seq, int) and isinstance(topic, str):
            if seq <= self.last_seq.get(topic, 0):
                self.duplicates_dropped += 1
                self._changed.set()
                return
            self.last_seq[topic] = seq
        self.events.append(event)
        self._inbox.append(event)
        if event.get("name") == "session.state" and isinstance(topic, str):
            if (event.get("data") or {}).get("state") in FINAL_STATES:
                self.sessions.discard(topic.partition(":")[2])
        for listener in self._listeners:
            listener(event)
        self._changed.set()

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            return  # the resume sends it
        with contextlib.suppress(ConnectionError, RuntimeError):
            await send_frame(self._ws, self.codec, frame)

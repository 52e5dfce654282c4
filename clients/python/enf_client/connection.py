"""One WebSocket connection to the server, as it is: every frame sent and
received is kept (tests and benchmarks look at them), nothing is retried.
`enf_client.resilient.ResilientClient` is the one that survives drops.

async with EnfClient(url, token) as c:
    reply = await c.call("session.request", {...})
    event = await c.expect("session.state", state="ENP_ASSIGNED")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Hashable
from typing import Any

import aiohttp

from enf_client.codec import Codec, codec_named


class RequestFailed(Exception):
    def __init__(self, reply: dict[str, Any]) -> None:
        err = reply.get("error") or {}
        super().__init__(f"{err.get('code')}: {err.get('message')}")
        self.code: str = err.get("code", "")
        self.reply = reply


def reply_data(reply: dict[str, Any]) -> dict[str, Any]:
    """An ok reply's data; a refusal raises RequestFailed."""
    if not reply.get("ok"):
        raise RequestFailed(reply)
    data: dict[str, Any] = reply["data"]
    return data


async def send_frame(ws: aiohttp.ClientWebSocketResponse, codec: Codec, frame: Any) -> None:
    """`frame` encoded by `codec`: a binary frame or a text frame."""
    data = codec.encode(frame)
    if isinstance(data, bytes):
        await ws.send_bytes(data)
    else:
        await ws.send_str(data)


def take_event(
    inbox: list[dict[str, Any]], name: str | None, topic: str | None, match: dict[str, Any]
) -> dict[str, Any] | None:
    """Remove and return the first event of `inbox` with this name, topic and
    data fields (None: any name, any topic)."""
    for i, ev in enumerate(inbox):
        if name is not None and ev.get("name") != name:
            continue
        if topic is not None and ev.get("topic") != topic:
            continue
        data = ev.get("data") or {}
        if all(data.get(k) == v for k, v in match.items()):
            return inbox.pop(i)
    return None


class EnfClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        codec: str = "json",
        hello: bool = False,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.codec: Codec = codec_named(codec)
        self.use_hello = hello
        self._own_session = session is None
        self._session = session
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: dict[str, Any] | None = None
        self.frames: list[dict[str, Any]] = []  # every frame received, in order
        self.sent: list[dict[str, Any]] = []  # every request sent, in order
        self.events: list[dict[str, Any]] = []  # every event, in arrival order
        self._inbox: list[dict[str, Any]] = []  # events not yet taken by expect()
        self._replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.orphan_replies: list[dict[str, Any]] = []  # replies no request() awaits
        self.replies: list[dict[str, Any]] = []  # every reply, in arrival order
        self._sent_ids: Counter[Hashable] = Counter()  # ids of frames sent through this client
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None

    async def __aenter__(self) -> EnfClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {}
        if self.token and not self.use_hello:
            headers["Authorization"] = f"Bearer {self.token}"
        self.ws = await self._session.ws_connect(
            self.url, protocols=(self.codec.name,), headers=headers, autoping=True, max_msg_size=0
        )
        self._reader = asyncio.create_task(self._read())
        if self.use_hello:
            await self.send_raw({"type": "hello", "data": {"token": self.token}})
        welcome = await self.wait(lambda: self.welcome is not None or self.closed.is_set(), timeout)
        if self.welcome is None:
            raise ConnectionError(f"closed before welcome (code {self.close_code})")
        del welcome
        return self.welcome

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                frame = self.codec.decode(msg.data)
                self.frames.append(frame)
                if frame.get("type") == "welcome":
                    self.welcome = frame["data"]
                elif frame.get("type") == "event":
                    self.events.append(frame)
                    self._inbox.append(frame)
                elif "re" in frame:
                    self.replies.append(frame)
                    fut = self._replies.pop(frame["re"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    else:
                        self.orphan_replies.append(frame)
                self._changed.set()
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._changed.set()
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed ({self.close_code})"))

    async def wait(self, predicate: Any, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if result:
                    return result
                self._changed.clear()
                await self._changed.wait()

    async def send_raw(self, frame: Any) -> None:
        assert self.ws is not None
        if isinstance(frame, dict) and frame.get("id") is not None:
            rid = frame["id"]
            self._sent_ids[rid if isinstance(rid, Hashable) else repr(rid)] += 1
        await send_frame(self.ws, self.codec, frame)

    async def request(
        self,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        id: Any = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send a request and return its reply (ok or not)."""
        rid = id if id is not None else f"c{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        frame = {"id": rid, "type": type_, "data": data or {}}
        self.sent.append(frame)
        await self.send_raw(frame)
        async with asyncio.timeout(timeout):
            return await fut

    async def call(
        self, type_: str, data: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Send a request; return its data, or raise RequestFailed."""
        return reply_data(await self.request(type_, data, **kw))

    async def expect(
        self,
        name: str | None = None,
        *,
        topic: str | None = None,
        timeout: float = 10.0,
        **match: Any,
    ) -> dict[str, Any]:
        """Take the first event not yet taken with this name/topic and data fields."""

        def find() -> dict[str, Any] | None:
            return take_event(self._inbox, name, topic, match)

        try:
            found: dict[str, Any] = await self.wait(find, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no event {name} {match} within {timeout}s; "
                f"got {[e.get('name') for e in self._inbox]}"
            ) from None
        return found

    def reply_faults(self) -> list[str]:
        """Breaches of "every request gets exactly one reply" seen so far: a
        reply whose `re` names no request sent through this client, or more
        replies to an id than requests sent with it. A reply with `re: null`
        answers a frame without a readable id (PROTOCOL §10), which may have
        been written past the client (`ws.send_str`): not counted."""
        got: Counter[Hashable] = Counter()
        faults: list[str] = []
        for reply in self.replies:
            re = reply.get("re")
            if re is None:
                continue
            key = re if isinstance(re, Hashable) else repr(re)
            got[key] += 1
            if got[key] > self._sent_ids.get(key, 0):
                what = "a second reply" if self._sent_ids.get(key) else "an orphan reply"
                faults.append(f"{what} to {re!r}: {reply}")
        return faults

    def drop_inbox(self) -> None:
        self._inbox.clear()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        if self._own_session and self._session is not None:
            await self._session.close()

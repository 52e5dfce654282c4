"""The topic bus over Redis pub/sub (cluster mode).

Shards publish each committed event on the channel of its topic; a gateway
subscribes to the channels of the topics its connections follow and hands
what arrives to them. Pub/sub can drop (a gateway that reconnects, a slow
subscriber cut off by Redis): durable events carry `seq`, and a connection
that sees a gap re-reads the journal (`gateway.following`). Publishing
never blocks an actor: frames go to a bounded queue that one task pipelines
to Redis, reconnecting with backoff while Redis is away.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections import defaultdict
from typing import Any

import msgpack
import redis.asyncio as aioredis

from actors.bus import Subscriber
from core.loops import BackgroundLoop, stop_loops
from core.messages import Delivery

logger = logging.getLogger(__name__)

PREFIX = "enf:t:"
MAX_QUEUED = 50_000  # frames kept while Redis is away; the oldest go first


def encode(d: Delivery) -> bytes:
    packed: bytes = msgpack.packb((d.topic, d.event, d.seq, d.to_user))
    return packed


def decode(raw: bytes) -> Delivery:
    topic, event, seq, to_user = msgpack.unpackb(raw)
    return Delivery(topic, event, seq, to_user)


def backoff(attempt: int, cap: float = 5.0) -> float:
    return float(random.uniform(0, min(cap, 0.1 * 2**attempt)))


class RedisBus:
    def __init__(self, url: str) -> None:
        self.url = url
        # Commands on a connection that died silently give up after 5 s (the
        # subscriber reads with its own shorter timeout).
        self.client: aioredis.Redis = aioredis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=10
        )
        self._subs: defaultdict[str, set[Subscriber]] = defaultdict(set)
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._out: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=MAX_QUEUED)
        self._wake = asyncio.Event()
        self._pubsub: Any = None
        self._loops = (
            BackgroundLoop("redis-bus-publisher", self._publisher),
            BackgroundLoop("redis-bus-reader", self._reader),
        )
        self.publish_ok = True
        self.subscribe_ok = False
        self._subscriber = False
        self.dropped = 0
        self.received = 0

    @property
    def status(self) -> str:
        if self.publish_ok and (self.subscribe_ok or not self._subscriber):
            return "ok"
        return "unavailable: reconnecting to Redis"

    async def start(self, *, subscriber: bool = True) -> None:
        """`subscriber=False` for a process that only publishes (a shard)."""
        publisher, reader = self._loops
        publisher.start()
        self._subscriber = subscriber
        if subscriber:
            reader.start()

    async def stop(self) -> None:
        # Let queued frames go out (briefly) before closing.
        for _ in range(20):
            if not self._out or not self.publish_ok:
                break
            await asyncio.sleep(0.05)
        await stop_loops(self._loops)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    # -- publishing ---------------------------------------------------------------

    def publish(self, d: Delivery) -> None:
        if len(self._out) == self._out.maxlen:
            self.dropped += 1
        self._out.append((PREFIX + d.topic, encode(d)))
        self._wake.set()

    async def _publisher(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                batch = list(self._out)
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.publish_ok:
                        logger.warning("Redis unavailable for publishing: %s", exc)
                    self.publish_ok = False
                    await asyncio.sleep(backoff(attempt))
                    attempt += 1
                    continue
                for _ in batch:
                    if self._out:
                        self._out.popleft()
                if not self.publish_ok:
                    logger.info("Redis is back for publishing")
                self.publish_ok, attempt = True, 0

    # -- subscribing ----------------------------------------------------------------

    def subscribe(self, topic: str, sub: Subscriber) -> None:
        first = topic not in self._subs
        self._subs[topic].add(sub)
        if first and self._pubsub is not None and self.subscribe_ok:
            self._send(self._pubsub.subscribe(PREFIX + topic))

    def unsubscribe(self, topic: str, sub: Subscriber) -> None:
        subs = self._subs.get(topic)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[topic]
            self._confirmed.discard(topic)
            if self._pubsub is not None and self.subscribe_ok:
                self._send(self._pubsub.unsubscribe(PREFIX + topic))

    async def subscribed(self, topic: str, timeout: float = 2.0) -> bool:
        """Wait until Redis confirmed the topic's subscription (so nothing
        published from now on is missed); False if it did not in time."""
        if topic in self._confirmed:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(topic, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False

    def _send(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_failure)

    def topic_count(self) -> int:
        return len(self._subs)

    async def _reader(self) -> None:
        attempt = 0
        while True:
            try:
                self._pubsub = self.client.pubsub()
                # One channel of our own, so the connection exists before the
                # first topic (and stays subscribed when none are followed).
                await self._pubsub.subscribe("enf:gateway")
                topics = list(self._subs)
                if topics:
                    await self._pubsub.subscribe(*(PREFIX + t for t in topics))
                if not self.subscribe_ok and attempt:
                    logger.info("Redis is back: resubscribed to %d topics", len(topics))
                    self._missed(topics)
                self.subscribe_ok, attempt = True, 0
                while True:
                    msg = await self._pubsub.get_message(
                        ignore_subscribe_messages=False, timeout=1.0
                    )
                    if msg is not None:
                        self._on_message(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribe_ok or attempt == 0:
                    logger.warning("Redis subscription lost: %s", exc)
                self.subscribe_ok = False
                self._confirmed.clear()
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    def _missed(self, topics: list[str]) -> None:
        """Redis was away: whatever was published meanwhile is lost. Each
        subscriber that can (`missed(topic)`) reads it back from the journal
        now, instead of at the topic's next event (which may never come)."""
        for topic in topics:
            for sub in tuple(self._subs.get(topic, ())):
                missed = getattr(sub, "missed", None)
                if missed is not None:
                    try:
                        missed(topic)
                    except Exception:
                        logger.exception("subscriber failed on %s", topic)

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        channel = msg.get("channel") or b""
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe" and name.startswith(PREFIX):
            topic = name[len(PREFIX) :]
            self._confirmed.add(topic)
            for fut in self._waiters.pop(topic, []):
                if not fut.done():
                    fut.set_result(None)
            return
        if kind != "message":
            return
        try:
            d = decode(msg["data"])
        except Exception:
            logger.warning("undecodable frame on %s", name)
            return
        self.received += 1
        for sub in tuple(self._subs.get(d.topic, ())):
            try:
                sub.deliver(d)
            except Exception:
                logger.exception("subscriber failed on %s", d.topic)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("Redis subscription change failed: %s", task.exception())

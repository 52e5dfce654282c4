"""The cluster-wide request limit per user (cluster mode), counted in Redis.

A user's connections may sit on different gateways, so each gateway counts
the requests it sees per user and adds them every 200 ms to a per-second
counter in Redis (`enf:rl:<user>:<second>`, INCRBY, expiring); a user whose
total for the current second is over ENF_USER_RATE_LIMIT gets
`rate_limited` on every gateway until the second ends. The check itself
never waits for Redis; while Redis is away only the per-connection limit
applies.

It also holds the one token-bucket implementation of the server
(`TokenBucket`): the per-connection request limit with its flood detection
(`RateLimiter`), and the buckets kept per key (a user, an IP address) of the
HTTP limits (`KeyedBuckets`, bounded in size).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections import Counter

import redis.asyncio as aioredis

from core.loops import BackgroundLoop

logger = logging.getLogger(__name__)

FLUSH_S = 0.2


class TokenBucket:
    """`rate` tokens per second, at most `capacity`; a hit takes one."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float | None = None) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens = capacity
        self.stamp = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float | None = None) -> bool:
        """Take a token if there is one."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def retry_after(self) -> int:
        """Whole seconds until a token is there again (at least 1)."""
        return max(1, math.ceil((1 - self.tokens) / self.rate))

    def full(self, now: float) -> bool:
        """Whether it has refilled to capacity (forgetting it changes nothing)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


class KeyedBuckets:
    """One `TokenBucket` per key, bounded: past `max_keys`, buckets that are
    full again are forgotten, then (a flood of new keys) the least recently
    used ones."""

    def __init__(self, rate: float, capacity: float, max_keys: int = 100_000) -> None:
        self.rate, self.capacity, self.max_keys = rate, capacity, max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> int:
        """0 if `key` may go on, else the seconds to wait (Retry-After)."""
        now = time.monotonic()
        bucket = self._buckets.pop(key, None)  # re-inserted last: most recently used
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = TokenBucket(self.rate, self.capacity, now)
        self._buckets[key] = bucket
        return 0 if bucket.take(now) else bucket.retry_after()

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        excess = len(self._buckets) - self.max_keys + 1
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]


class RateLimiter:
    """The per-connection request limit: a token bucket (rate/s, burst 2x
    rate) plus flood detection: a rate of 10x the limit for `flood_window`
    whole seconds."""

    def __init__(self, rate: float, flood_window: int = 5) -> None:
        self.rate = rate
        self.bucket = TokenBucket(rate, rate * 2)
        self.window: collections.deque[int] = collections.deque(maxlen=flood_window)
        self.second, self.count = int(self.bucket.stamp), 0

    def hit(self) -> tuple[bool, bool]:
        """(allowed, flooding)."""
        now = time.monotonic()
        allowed = self.bucket.take(now)
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
        return allowed, flooding


class ClusterRateLimit:
    def __init__(self, client: aioredis.Redis, limit: float) -> None:
        self.client = client
        self.limit = limit
        self._counts: Counter[str] = Counter()
        self._window = int(time.time())
        self._blocked: dict[str, int] = {}  # user -> the second it is blocked in
        self._flusher = BackgroundLoop("cluster-rate-limit", self._run)
        self.ok = True

    def allow(self, user_id: str) -> bool:
        now = int(time.time())
        if self._blocked.get(user_id) == now:
            return False
        self._counts[user_id] += 1
        return True

    def start(self) -> None:
        self._flusher.start()

    async def stop(self) -> None:
        await self._flusher.stop(1.0)  # a flush lost at shutdown loses nothing

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            counts, self._counts = self._counts, Counter()
            window = int(time.time())
            self._blocked = {u: w for u, w in self._blocked.items() if w >= window}
            if not counts:
                continue
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for user, n in counts.items():
                        key = f"enf:rl:{user}:{window}"
                        pipe.incrby(key, n)
                        pipe.expire(key, 3)
                    totals = (await pipe.execute())[::2]
                self.ok = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.ok:
                    logger.warning("cluster-wide rate limit not counted (Redis): %s", exc)
                self.ok = False
                continue
            for user, total in zip(counts, totals, strict=True):
                if total > self.limit:
                    if self._blocked.get(user) != window:
                        logger.info("user %s over the cluster-wide limit (%d/s)", user, total)
                    self._blocked[user] = window

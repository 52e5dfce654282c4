"""The cluster-wide request limit per user (cluster mode), counted in Redis.

A user's connections may sit on different gateways, so each gateway counts
the requests it sees per user and adds them every 200 ms to a per-second
counter in Redis (`enf:rl:<user>:<second>`, INCRBY, expiring); a user whose
total for the current second is over ENF_USER_RATE_LIMIT gets
`rate_limited` on every gateway until the second ends. The check itself
never waits for Redis; while Redis is away only the per-connection limit
applies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import redis.asyncio as aioredis

from core.loops import BackgroundLoop

logger = logging.getLogger(__name__)

FLUSH_S = 0.2


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
        await self._flusher.stop()

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

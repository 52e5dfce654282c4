"""Presence leases in Redis (cluster mode).

A gateway holds a lease for every notary connection it serves and renews
them all every third of the lease; a gateway that dies stops renewing, so
its notaries' connections lapse after the lease, and the NotaryActor (which
checks its leases on a timer) then applies the reconnect grace as if the
sockets had closed. A NotaryActor re-activated after its shard restarted
reads its leases back, so a notary still connected stays online.

Layout: `enf:leases:<notary_id>` is a sorted set of connection ids scored
by their expiry (ms since the epoch); `enf:leases` scores notary ids the
same way, so a restarted Matchmaker finds who is online.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from core.loops import BackgroundLoop

logger = logging.getLogger(__name__)

ALL = "enf:leases"
# A request waits at most this long for Redis to take a lease (it is renewed
# in the background anyway).
OP_TIMEOUT_S = 2.0


def notary_key(notary_id: str) -> str:
    return f"enf:leases:{notary_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class PresenceLeases:
    def __init__(self, client: aioredis.Redis, lease_s: float) -> None:
        self.client = client
        self.lease_s = lease_s
        self.held: set[tuple[str, str]] = set()  # (notary_id, connection_id) renewed here
        self._renewal = BackgroundLoop("presence-leases", self._renew_loop)
        self.ok = True

    # -- the gateway's side -------------------------------------------------------

    def start(self) -> None:
        self._renewal.start()

    async def stop(self) -> None:
        await self._renewal.stop()
        # A gateway that stops cleanly has closed its sockets: their leases go now.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._remove(list(self.held)), OP_TIMEOUT_S)
        self.held.clear()

    async def hold(self, notary_id: str, connection_id: str) -> None:
        """Take the lease before the notary goes online, so its actor finds it."""
        self.held.add((notary_id, connection_id))
        try:
            await asyncio.wait_for(self._write([(notary_id, connection_id)]), OP_TIMEOUT_S)
        except Exception as exc:
            logger.warning("presence lease for %s not written: %s", notary_id, exc)

    async def release(self, notary_id: str, connection_id: str) -> None:
        self.held.discard((notary_id, connection_id))
        try:
            await asyncio.wait_for(self._remove([(notary_id, connection_id)]), OP_TIMEOUT_S)
        except Exception as exc:
            logger.warning("presence lease for %s not removed (it lapses): %s", notary_id, exc)

    async def _write(self, pairs: list[tuple[str, str]]) -> None:
        expiry = _now_ms() + int(self.lease_s * 1000)
        ttl = max(1, int(self.lease_s * 2))
        async with self.client.pipeline(transaction=False) as pipe:
            for notary_id, conn in pairs:
                pipe.zadd(notary_key(notary_id), {conn: expiry})
                pipe.expire(notary_key(notary_id), ttl)
                pipe.zadd(ALL, {notary_id: expiry})
            await pipe.execute()

    async def _remove(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for notary_id, conn in pairs:
                pipe.zrem(notary_key(notary_id), conn)
            await pipe.execute()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._write(list(self.held))
                await self.client.zremrangebyscore(ALL, "-inf", _now_ms())
                if not self.ok:
                    logger.info("presence leases renewed again (%d)", len(self.held))
                self.ok = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.ok:
                    logger.warning("cannot renew presence leases: %s", exc)
                self.ok = False

    # -- the actors' side -----------------------------------------------------------

    async def alive(self, notary_id: str) -> set[str] | None:
        """The notary's connections whose lease still runs; None when Redis
        cannot say (the caller keeps what it believes)."""
        try:
            conns: list[Any] = await self.client.zrangebyscore(
                notary_key(notary_id), _now_ms(), "+inf"
            )
        except Exception as exc:
            logger.warning("cannot read presence leases of %s: %s", notary_id, exc)
            return None
        return {c.decode() if isinstance(c, bytes) else str(c) for c in conns}

    async def online_notaries(self) -> list[str]:
        try:
            ids: list[Any] = await self.client.zrangebyscore(ALL, _now_ms(), "+inf")
        except Exception as exc:
            logger.warning("cannot read presence leases: %s", exc)
            return []
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

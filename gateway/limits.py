"""The limits of PROTOCOL §8 that are kept per server (README "Limits"), apart
from the per-connection request rate (`cluster.ratelimit.RateLimiter`):

- open WebSockets per user (`ENF_MAX_CONNECTIONS_PER_USER`): a slot is
  claimed before the upgrade and given back when the socket is gone; in
  cluster mode each gateway counts its own connections;
- sessions in REQUESTED per customer (`ENF_MAX_OPEN_REQUESTS`), counted from
  the sessions projection (Postgres, committed with the events before the
  reply, so right across restarts); a customer's new requests are serialised
  on this gateway from the count to the reply, so two at once cannot both
  pass at the limit;
- authenticated HTTP calls per user (`ENF_HTTP_USER_RATE_LIMIT`/s, bursts of
  twice that) and, per IP address, unauthenticated HTTP requests and failed
  authentications (`ENF_ANON_RATE_LIMIT`/min): token buckets
  (`cluster.ratelimit.KeyedBuckets`);
- audit rows of refused frames per connection (`RefusalAudit`).

Every refusal is counted in `enf_limit_refusals_total{limit}`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from cluster.ratelimit import KeyedBuckets
from config.settings import Settings
from core.errors import ProtocolError
from gateway.auth import Identity
from gateway.keyed_locks import KeyedLocks
from gateway.metrics import Metrics
from persistence import sessions
from persistence.events import CONNECTION_ERRORS, Unavailable

SESSION_PREFIX = "session:"


class Limits:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._connections: Counter[str] = Counter()
        self._customers = KeyedLocks()
        http_rate = settings.http_user_rate_limit
        self._users = KeyedBuckets(http_rate, http_rate * 2)
        anon_per_s = settings.anon_rate_limit / 60.0
        self._addresses = KeyedBuckets(anon_per_s, settings.anon_rate_limit)

    def refused(self, limit: str) -> None:
        self.metrics.limit_refusals.labels(limit).inc()

    # -- open WebSockets per user --------------------------------------------------

    def claim_connection(self, user_id: str) -> bool:
        """Take one of the user's connection slots (False: none left)."""
        if self._connections[user_id] >= self.settings.max_connections_per_user:
            self.refused("ws_connections_per_user")
            return False
        self._connections[user_id] += 1
        return True

    def release_connection(self, user_id: str) -> None:
        self._connections[user_id] -= 1
        if self._connections[user_id] <= 0:
            del self._connections[user_id]

    def connections_of(self, user_id: str) -> int:
        return self._connections.get(user_id, 0)

    # -- sessions in REQUESTED per customer -------------------------------------------

    @asynccontextmanager
    async def open_request(
        self, pool: asyncpg.Pool, ident: Identity, actor: str
    ) -> AsyncIterator[None]:
        """Around the ask of a new session's request: `rate_limited` if the
        customer already has `ENF_MAX_OPEN_REQUESTS` sessions in REQUESTED,
        unless `actor` exists (a repeat: the session answers it)."""
        session_id = actor.removeprefix(SESSION_PREFIX)
        async with self._customers.hold(ident.user_id):
            try:
                count, known = await sessions.open_requests_of(pool, ident.user_id, session_id)
            except (Unavailable, *CONNECTION_ERRORS):
                raise ProtocolError("unavailable", "database unavailable, try again") from None
            limit = self.settings.max_open_requests
            if not known and count >= limit:
                self.refused("open_requests")
                raise ProtocolError(
                    "rate_limited",
                    f"{count} requests already wait for a notary (at most {limit}):"
                    " cancel one or wait",
                )
            yield

    def customers_waiting(self) -> int:
        """Customers whose requests are being admitted now (bounded by them)."""
        return len(self._customers)

    # -- HTTP ---------------------------------------------------------------------

    def http_user(self, user_id: str) -> int:
        """0, or the Retry-After (seconds) of a user over its HTTP rate."""
        wait = self._users.take(user_id)
        if wait:
            self.refused("http_user_rate")
        return wait

    def anonymous(self, address: str | None) -> int:
        """Charge an unauthenticated request or a failed authentication to its
        IP address: 0, or the Retry-After (seconds) once over the limit."""
        wait = self._addresses.take(address or "-")
        if wait:
            self.refused("anon_rate")
        return wait


class RefusalAudit:
    """How many audit rows one connection's refusals get: the first `burst`
    of each interval a row each; the rest are counted, and the next refusal
    after the interval (or the close) writes one summary row with the count,
    so a flood of bad frames cannot push legitimate rows out of the audit."""

    __slots__ = ("burst", "interval_s", "started", "suppressed", "written")

    def __init__(self, burst: int, interval_s: float) -> None:
        self.burst, self.interval_s = burst, interval_s
        self.started = time.monotonic()
        self.written = 0
        self.suppressed: Counter[str] | None = None  # made by the first one suppressed

    def admit(self, code: str) -> tuple[bool, dict[str, Any] | None]:
        """(write this refusal's row?, a summary row's metadata to write first)."""
        summary = None
        now = time.monotonic()
        if now - self.started >= self.interval_s:
            summary = self.summary()
            self.started, self.written = now, 0
        if self.written < self.burst:
            self.written += 1
            return True, summary
        if self.suppressed is None:
            self.suppressed = Counter()
        self.suppressed[code] += 1
        return False, summary

    def summary(self) -> dict[str, Any] | None:
        """The metadata of a summary row for what was not written (None if
        nothing), and a fresh count."""
        if not self.suppressed:
            return None
        meta: dict[str, Any] = {
            "suppressed": sum(self.suppressed.values()),
            "codes": dict(self.suppressed),
            "interval_s": self.interval_s,
        }
        self.suppressed = None
        return meta

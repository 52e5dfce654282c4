"""The delivery worker: the outbox's rows to the outside world.

It delivers the oldest pending row of each stream (one destination of one
session), so order is kept per stream while streams proceed in parallel.
Failures are retried with exponential backoff and full jitter; permanent
failures (4xx other than 408/429) and rows out of attempts are dead-lettered
with the reason, for an admin to inspect and replay. A circuit breaker per
destination stops hammering a receiver that is down, and probes it back.
Outcomes for recipients are told to their session actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from core.ids import session_address
from core.loops import BackgroundLoop, spawn, stop_tasks
from core.messages import Message
from persistence import outbox
from persistence.events import is_outage

logger = logging.getLogger(__name__)


# -- sending -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    permanent: bool = False
    error: str | None = None
    postpone_s: float | None = None  # not an attempt: try again later (e.g. not configured)


# How often rows held for want of a sender are released for the destinations
# that have one (they all are at start).
RELEASE_EVERY_S = 60.0
# The least time between two polls.
POLL_GAP_S = 0.02


class Sender(Protocol):
    key: str  # the destination, for its circuit breaker

    async def send(self, row: asyncpg.Record) -> Outcome: ...


def http_outcome(status: int, body: str = "") -> Outcome:
    if 200 <= status < 300:
        return Outcome(True)
    detail = f"HTTP {status}" + (f": {body[:200]}" if body else "")
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome(False, permanent=True, error=detail)
    return Outcome(False, error=detail)


class CircuitBreaker:
    """Closed; open after `threshold` failures in a row, for `cooldown_s`
    (doubling, up to `max_cooldown_s`); then one probe (half-open): its
    success closes it, its failure opens it again."""

    def __init__(
        self, threshold: int = 5, cooldown_s: float = 5.0, max_cooldown_s: float = 300.0
    ) -> None:
        self.threshold, self.base, self.max = threshold, cooldown_s, max_cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.cooldown = cooldown_s
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() >= self.opened_at + self.cooldown else "open"

    def allow(self) -> bool:
        st = self.state
        if st == "closed":
            return True
        if st == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.1, self.opened_at + self.cooldown - time.monotonic())

    def record(self, ok: bool) -> None:
        if ok:
            self.failures, self.opened_at, self.cooldown, self.probing = 0, None, self.base, False
            return
        self.failures += 1
        if self.probing:  # the probe failed: open again, for longer
            self.cooldown = min(self.max, self.cooldown * 2)
            self.opened_at, self.probing = time.monotonic(), False
        elif self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            logger.warning("circuit open after %d failures in a row", self.failures)


def short_reason(detail: str | None) -> str | None:
    """What goes into events and logs: the status or code, not the receiver's
    text (which may repeat a phone number); the detail stays in the outbox row
    for admins."""
    if detail is None:
        return None
    return detail.split(":", 1)[0].strip()


def backoff_s(attempts: int, base: float, cap: float) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base*2^n))."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempts - 1)))


# -- the worker ---------------------------------------------------------------------

Tell = Callable[[str, Message], None]


@dataclass
class DeliveryStats:
    attempts: int = 0
    delivered: int = 0
    failures: int = 0
    dead: int = 0


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        senders: dict[str, Sender | None],
        tell: Tell,
        *,
        max_attempts: int,
        base_s: float,
        cap_s: float,
        concurrency: int = 32,
        why_missing: dict[str, str] | None = None,
        breaker: tuple[int, float] = (5, 5.0),
    ) -> None:
        self._pool = pool
        self._senders = senders
        self._tell = tell
        self.max_attempts, self.base_s, self.cap_s = max_attempts, base_s, cap_s
        self._sem = asyncio.Semaphore(concurrency)
        self._busy: set[str] = set()
        # When each stream's last delivery ended: rows fetched before that may
        # be stale (already delivered) and are skipped until the next fetch.
        self._ended: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._poller = outbox.Poller(pool)
        self._loop = BackgroundLoop("delivery-worker", self._run)
        self._tasks: set[asyncio.Task[None]] = set()  # one per delivery under way
        self.breakers: dict[str, CircuitBreaker] = {}
        self._breaker = breaker
        self.why_missing = why_missing or {}
        self.stats = DeliveryStats()

    def wake(self) -> None:
        self._wake.set()

    def held_destinations(self) -> dict[str, str]:
        """The destinations this worker has no sender for, and why: a journal
        in the same process writes their rows held (single node), as this
        worker would hold them on its first poll."""
        return {
            dest: self.why_missing.get(dest, f"no sender for {dest}")
            for dest, sender in self._senders.items()
            if sender is None
        }

    async def start(self) -> None:
        self._loop.start()

    async def _release_held(self, quiet: bool) -> None:
        """Rows held for want of a sender are due again once it has one; say
        (at start) which destinations have none and how much waits for them."""
        for dest, sender in sorted(self._senders.items()):
            if sender is not None:
                n = await outbox.release_held(self._pool, dest)
                if n:
                    logger.info("%s: %d held deliveries are due again", dest, n)
            elif not quiet:
                why = self.why_missing.get(dest, f"no sender for {dest}")
                n = await outbox.held(self._pool, dest)
                logger.warning("%s deliveries are off (%d waiting): %s", dest, n, why)

    async def stop(self) -> None:
        await self._loop.stop()
        await self._poller.close()
        # A sender stuck on a dead peer must not hold up shutdown.
        await stop_tasks(list(self._tasks), timeout_s=5)
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _run(self) -> None:
        released_at: float | None = None
        fetched_at = 0.0
        while True:
            # Wake-ups come with every commit that writes a row and every
            # delivery that ends: one poll serves those of POLL_GAP_S.
            gap = POLL_GAP_S - (time.monotonic() - fetched_at)
            if gap > 0:
                await asyncio.sleep(gap)
            fetched_at = time.monotonic()
            try:
                # At start (when the database first answers), then each minute:
                # a row written behind a held one while it was being released
                # is held too, and goes with the next release.
                if released_at is None or fetched_at - released_at > RELEASE_EVERY_S:
                    await self._release_held(quiet=released_at is not None)
                    released_at = fetched_at
                rows = await self._poller.due(200, sorted(self._senders))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("outbox unavailable: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for row in rows:
                if row["stream"] in self._busy or self._ended.get(row["stream"], 0) > fetched_at:
                    continue
                self._busy.add(row["stream"])
                spawn(self._deliver(row), self._tasks)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            self._wake.clear()

    async def _deliver(self, row: asyncpg.Record) -> None:
        try:
            async with self._sem:
                await self._attempt(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_outage(exc):  # the row stays due: the next poll picks it up again
                logger.warning("delivery of %s: database unavailable (%s)", row["id"], exc)
                return
            logger.exception("delivery of %s failed unexpectedly", row["id"])
            with contextlib.suppress(Exception):
                await self._reschedule(row, row["attempts"], "internal error", 5.0)
        finally:
            self._busy.discard(row["stream"])
            now = time.monotonic()
            self._ended[row["stream"]] = now
            if len(self._ended) > 10_000:
                self._ended = {k: t for k, t in self._ended.items() if now - t < 60}
            self._wake.set()

    async def _attempt(self, row: asyncpg.Record) -> None:
        dest = row["destination"]
        sender = self._senders.get(dest)
        if sender is None:
            reason = self.why_missing.get(dest, f"no sender for {dest}")
            await outbox.hold(self._pool, row["id"], reason)
            return
        breaker = self.breakers.get(sender.key)
        if breaker is None:
            breaker = self.breakers[sender.key] = CircuitBreaker(*self._breaker)
        if not breaker.allow():
            await self._reschedule(
                row, row["attempts"], f"circuit open for {sender.key}", breaker.retry_in()
            )
            return
        self.stats.attempts += 1
        try:
            outcome = await sender.send(row)
        except Exception as exc:  # a sender bug must not lose the row
            logger.exception("sender %s raised", dest)
            outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}")
        if outcome.postpone_s is not None:
            await self._reschedule(
                row, row["attempts"], outcome.error or "later", outcome.postpone_s
            )
            return
        breaker.record(outcome.ok or outcome.permanent)
        attempts = row["attempts"] + 1
        if outcome.ok:
            self.stats.delivered += 1
            await outbox.mark_delivered(self._pool, row["id"], attempts)
            self._report(row, "delivered", None)
            return
        self.stats.failures += 1
        if outcome.permanent or attempts >= self.max_attempts:
            why = outcome.error if outcome.permanent else f"{attempts} attempts: {outcome.error}"
            self.stats.dead += 1
            logger.warning("delivery %s dead-lettered: %s", row["id"], short_reason(why))
            await outbox.mark_dead(self._pool, row["id"], attempts, why)
            self._report(row, "dead_letter", short_reason(why))
            return
        await self._reschedule(
            row, attempts, outcome.error or "failed", backoff_s(attempts, self.base_s, self.cap_s)
        )

    async def _reschedule(
        self, row: asyncpg.Record, attempts: int, error: str, delay_s: float
    ) -> None:
        await outbox.reschedule(self._pool, row["id"], attempts, error, delay_s)

    def _report(self, row: asyncpg.Record, status: str, reason: str | None) -> None:
        if row["recipient"] is not None and row["session_id"]:
            self._tell(
                session_address(row["session_id"]),
                Message(
                    "delivery_result",
                    {
                        "recipient": row["recipient"],
                        "delivery_id": row["id"],
                        "status": status,
                        "reason": reason,
                    },
                ),
            )

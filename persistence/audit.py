"""The audit log: who did what, when, from where, and how it ended — every
WebSocket request (allowed or refused) and every HTTP call on `/v1/`.

Rows are queued without waiting and written in batches (one binary COPY
every 100 ms or 1,000 rows), so auditing never slows a request down. What a
request changed is durable in the journal before its reply; its audit row
follows within the flush interval (a crash can lose at most that interval of
audit rows, never a journal event). If the database is away, rows wait in
memory (up to `max_pending`, then the oldest are dropped and counted).

Legitimate rows come first: rows of refusals (outcome `refused`: a bad
frame, a limit, a 4xx) wait in a queue of their own, written after the
others, and when the backlog is full a refusal row is dropped before any
other (a new refusal row is dropped rather than an older legitimate one),
so a flood of refusals cannot push legitimate rows out.

A row Postgres refuses (a value it cannot store) never holds up the others:
when a batch fails while the database answers, its rows are written one by
one and the refused ones are dropped, logged and counted (`refused`).

The log is hash-chained (`persistence.audit_chain`): each batch is one
transaction that locks the chain's head, so the writers of every process
extend one chain, and a refused row, never written, is never in it. A row
altered, removed or moved afterwards is named by `run.py verify-audit`
(`persistence.audit_chain.verify_audit`). Rows written before the chain existed
(migration 0006) carry no hash; they are accepted only before the first
chained row, never after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from core.loops import BackgroundLoop
from persistence.audit_chain import COLUMNS, ChainHead, write_chained
from persistence.filters import where

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditRecord:
    event_type: str  # ws.request, http.request
    action: str  # the request type, or "METHOD /route"
    outcome: str  # ok, refused, error
    correlation_id: str
    user_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    error_code: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def fields(self) -> dict[str, Any]:
        """The row's `COLUMNS` by name."""
        return {c: getattr(self, c) for c in COLUMNS}


def resource_of(actor_id: str) -> tuple[str, str]:
    """`session:<id>` -> ("session", "<id>")."""
    kind, _, rid = actor_id.partition(":")
    return kind, rid or kind


class AuditLog:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flush_every: float = 0.1,
        max_batch: int = 1000,
        max_pending: int = 200_000,
    ) -> None:
        self._pool = pool
        self._pending: deque[AuditRecord] = deque()  # legitimate rows
        self._refusals: deque[AuditRecord] = deque()  # outcome "refused"
        self._flush_every = flush_every
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self._head = ChainHead()  # where this writer left the chain
        self._flushing = asyncio.Lock()
        self._writer = BackgroundLoop("audit-writer", self._run)
        self.written = 0
        self.dropped = 0
        self.refused = 0  # rows Postgres would not store, dropped

    @property
    def backlog(self) -> int:
        """Rows waiting to be written."""
        return len(self._pending) + len(self._refusals)

    def record(self, rec: AuditRecord) -> None:
        refusal = rec.outcome == "refused"
        if self.backlog >= self._max_pending:
            self.dropped += 1
            if self._refusals or refusal:
                # A row of a refusal goes (a flood is expected to lose some).
                if self.dropped % 1000 == 1:
                    logger.warning("audit backlog full: %d rows dropped so far", self.dropped)
                if not self._refusals:
                    return  # only legitimate rows wait: they stay
                self._refusals.popleft()
            else:
                if self.dropped % 1000 == 1:
                    logger.error("audit backlog full: %d audit rows dropped so far", self.dropped)
                self._pending.popleft()
        (self._refusals if refusal else self._pending).append(rec)
        if self.backlog >= self._max_batch:
            self._wake.set()

    def _take(self) -> list[AuditRecord]:
        """The next batch: legitimate rows first, then refusals."""
        batch: list[AuditRecord] = []
        for queue in (self._pending, self._refusals):
            while queue and len(batch) < self._max_batch:
                batch.append(queue.popleft())
        return batch

    def _requeue(self, batch: list[AuditRecord]) -> None:
        """Put rows not written back at the head of their queues, in order."""
        self._refusals.extendleft(reversed([r for r in batch if r.outcome == "refused"]))
        self._pending.extendleft(reversed([r for r in batch if r.outcome != "refused"]))

    async def start(self) -> None:
        self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)
        if self.backlog:
            logger.error("%d audit rows could not be written at shutdown", self.backlog)

    async def flush(self) -> None:
        """Write every row queued so far. Flushes take turns: a flush called
        while another writes (the background loop's, say) returns only once
        that one's rows are committed too, so what an export reads after it
        has every row recorded before it."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        while self.backlog:
            batch = self._take()
            try:
                async with self._pool.acquire() as conn:
                    try:
                        await _copy(conn, batch, self._head)
                    except _ROW_ERRORS:
                        # Some row of it cannot be stored: find it, keep the rest.
                        await self._one_by_one(conn, batch)
                        continue
            except BaseException:
                self._requeue(batch)
                raise
            self.written += len(batch)

    async def _one_by_one(self, conn: asyncpg.Connection, batch: list[AuditRecord]) -> None:
        """Write `batch` row by row, dropping the rows Postgres refuses. If
        anything else goes wrong (the database went away), what is not written
        yet goes back to the head of the queue."""
        for i, rec in enumerate(batch):
            try:
                await _copy(conn, [rec], self._head)
            except _ROW_ERRORS as exc:
                self.refused += 1
                logger.error(
                    "audit row refused by the database, dropped (%d so far): %s %s by %r: %s",
                    self.refused,
                    rec.event_type,
                    rec.action[:100],
                    rec.user_id,
                    exc,
                )
                continue
            except BaseException:
                self._requeue(batch[i:])
                raise
            self.written += 1

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_every)
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("audit rows not written yet (%d waiting): %s", self.backlog, exc)
                await asyncio.sleep(1.0)


# What one row can make fail (its values), as opposed to the connection: a
# value Postgres refuses (NUL, bad encoding, out of range), or one the driver
# cannot encode (an unpaired surrogate, a value jsonb cannot hold).
_ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError)


async def _copy(conn: asyncpg.Connection, batch: list[AuditRecord], head: ChainHead) -> None:
    # Hash-chained, in one transaction (one statement while this writer knows the head).
    await write_chained(conn, [r.fields() for r in batch], head)


EXPORT_COLUMNS = ("id", *COLUMNS)


async def export(
    pool: asyncpg.Pool,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    user_id: str | None = None,
    resource_id: str | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Audit rows (`EXPORT_COLUMNS`) with `since <= at < until`, of a user, on
    a resource (each filter if given), in order, read from a cursor: a large
    export never sits in memory. Close it (`contextlib.aclosing`) if not read
    to the end, so its connection goes back at once."""
    clause, args = where(
        (
            ("at", ">=", since),
            ("at", "<", until),
            ("user_id", "=", user_id),
            ("resource_id", "=", resource_id),
        )
    )
    sql = "SELECT id, " + ", ".join(COLUMNS) + " FROM audit_log" + clause + " ORDER BY id"
    async with pool.acquire() as conn, conn.transaction():
        async for r in conn.cursor(sql, *args, prefetch=500):
            yield {c: r[c] for c in EXPORT_COLUMNS}

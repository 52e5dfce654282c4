"""The event journal: hash-chained rows per actor, appended by group commit.

Actors hand complete appends (events already numbered and hashed, plus the
rows that must commit with them: projections, idempotency records, a
snapshot) to `Journal.append`, which resolves once they are committed. A few
writer tasks drain the queue, each committing everything waiting in one
transaction, so concurrent actors share the cost of a commit.

A batch that fails on one actor's rows (a stale activation hitting the
`(actor_id, seq)` key, a value Postgres refuses) is retried one append per
transaction, so only the offending actor sees the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from config import tracing
from core.clock import iso, parse_iso
from persistence.projections import OUTBOX, TABLES, Projection, ProjectionTable

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64


class Unavailable(Exception):
    """The database could not make the append durable; nothing was applied."""


class StaleActivation(Exception):
    """Another activation of the same actor appended first; this one must stop."""


class Fenced(Exception):
    """The shard's epoch moved on: a newer incarnation of the shard owns its
    actors, and this one may not write any more."""


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(
    prev_hash: str, actor_id: str, seq: int, name: str, data: dict[str, Any], at: str
) -> str:
    """hash = sha256(prev_hash || canonical row) — ARCHITECTURE.md, Durability."""
    row = canonical_json(
        {
            "actor_id": actor_id,
            "seq": seq,
            "name": name,
            "data": data,
            "at": at,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256((prev_hash + row).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    actor_id: str
    seq: int
    name: str
    data: dict[str, Any]
    at: str
    prev_hash: str
    hash: str

    @classmethod
    def make(
        cls, actor_id: str, seq: int, name: str, data: dict[str, Any], at: str, prev_hash: str
    ) -> StoredEvent:
        return cls(
            actor_id,
            seq,
            name,
            data,
            at,
            prev_hash,
            chain_hash(prev_hash, actor_id, seq, name, data, at),
        )

    def wire(self) -> dict[str, Any]:
        """The event as clients see it (PROTOCOL §3); the topic is the actor id."""
        return {
            "type": "event",
            "topic": self.actor_id,
            "seq": self.seq,
            "name": self.name,
            "data": self.data,
            "at": self.at,
        }

    def with_hashes(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "data": self.data,
            "at": self.at,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def batch_sql(tables: Sequence[ProjectionTable]) -> str:
    """One statement for a whole batch: journal rows, idempotency records,
    snapshots and each projection table, every one an `unnest` of arrays (empty
    arrays insert nothing). Data-modifying CTEs all run, in one transaction."""
    parts = [
        "j AS (INSERT INTO journal (actor_id, seq, name, data, at, prev_hash, hash)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[],"
        " $5::timestamptz[], $6::text[], $7::text[]))",
        "i AS (INSERT INTO idempotency (actor_id, user_id, request_id, fingerprint, reply)"
        " SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[])"
        " ON CONFLICT (actor_id, user_id, request_id) DO UPDATE"
        " SET fingerprint = EXCLUDED.fingerprint, reply = EXCLUDED.reply, created_at = now())",
        "s AS (INSERT INTO snapshots (actor_id, seq, state)"
        " SELECT * FROM unnest($13::text[], $14::bigint[], $15::jsonb[])"
        " ON CONFLICT (actor_id) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state,"
        " at = now() WHERE snapshots.seq <= EXCLUDED.seq)",
    ]
    n = 16
    for k, t in enumerate(tables):
        arrays = ", ".join(f"${n + i}::{ty}[]" for i, ty in enumerate(t.types))
        n += len(t.types)
        parts.append(
            f"p{k} AS (INSERT INTO {t.table} ({', '.join(t.columns)})"
            f" SELECT * FROM unnest({arrays}) ON CONFLICT {t.on_conflict})"
        )
    return "WITH " + ",\n".join(parts) + "\nSELECT 1"


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    user_id: str
    request_id: str
    fingerprint: str
    reply: dict[str, Any]


@dataclass(slots=True)
class Append:
    actor_id: str
    events: Sequence[StoredEvent] = ()
    # Rows of batched projection tables, and (sql, args) statements, that
    # must commit with the events.
    projections: Sequence[Projection] = ()
    statements: Sequence[tuple[str, tuple[Any, ...]]] = ()
    idempotency: Sequence[IdempotencyRecord] = ()
    snapshot: tuple[int, dict[str, Any]] | None = None
    future: asyncio.Future[None] | None = field(default=None, repr=False)


@dataclass(slots=True)
class JournalStats:
    batches: int = 0
    appends: int = 0
    rows: int = 0
    max_batch: int = 0
    write_seconds: float = 0.0

    def summary(self) -> str:
        avg = self.appends / self.batches if self.batches else 0.0
        ms = 1000 * self.write_seconds / self.batches if self.batches else 0.0
        return (
            f"{self.batches} batches, {self.appends} appends, {self.rows} events,"
            f" {avg:.1f} appends/batch (max {self.max_batch}), {ms:.2f} ms/batch"
        )


_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


class Journal:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        writers: int = 2,
        max_batch: int = 500,
        tables: Sequence[ProjectionTable] = TABLES,
    ) -> None:
        self._pool = pool
        self._tables = tuple(tables)
        self._batch_sql = batch_sql(self._tables)
        self._queue: asyncio.Queue[Append] = asyncio.Queue()
        self._writers_n = writers
        self._max_batch = max_batch
        self._tasks: list[asyncio.Task[None]] = []
        self._held: list[asyncpg.Connection | None] = [None] * writers
        # Called after a batch that wrote outbox rows (wakes the delivery worker).
        self.on_outbox: Callable[[], None] | None = None
        # Called after each committed batch with (appends, seconds), for metrics.
        self.on_batch: Callable[[int, float], object] | None = None
        # (shard, epoch) in cluster mode: every batch checks, under a share lock
        # of the shard's row, that the shard's epoch is still this one.
        self.fence: tuple[int, int] | None = None
        # Called once when a batch finds the fence moved (the shard stops itself).
        self.on_fenced: Callable[[], object] | None = None
        self.stats = JournalStats()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def start(self) -> None:
        for i in range(self._writers_n):
            self._tasks.append(asyncio.create_task(self._writer(i), name=f"journal-writer-{i}"))

    async def stop(self) -> None:
        """Let queued appends commit (up to 5 s), then stop the writers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        for i in range(len(self._held)):
            await self._drop_connection(i)
        logger.info("journal stopped: %s", self.stats.summary())

    async def append(self, append: Append) -> None:
        """Resolve once `append` is committed; raise Unavailable or StaleActivation."""
        if not self._tasks:
            raise Unavailable("journal is not running")
        append.future = asyncio.get_running_loop().create_future()
        with tracing.span("enf.journal.append", None, events=len(append.events)):
            self._queue.put_nowait(append)
            await append.future

    # -- writers ----------------------------------------------------------------

    async def _connection(self, writer: int) -> asyncpg.Connection:
        """Each writer holds one connection: no pool round trip (acquire,
        reset on release) per batch."""
        conn = self._held[writer]
        if conn is None or conn.is_closed():
            conn = self._held[writer] = await self._pool.acquire()
        return conn

    async def _drop_connection(self, writer: int) -> None:
        conn, self._held[writer] = self._held[writer], None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=2)

    async def _writer(self, writer: int) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch, writer)
                for _ in batch:
                    self._queue.task_done()
            except asyncio.CancelledError:
                for a in batch:
                    _settle(a, Unavailable("server shutting down"))
                raise
            except Exception:  # never let a writer die
                logger.exception("journal writer failed")
                for a in batch:
                    _settle(a, Unavailable("journal error"))
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[Append], writer: int) -> None:
        started = time.perf_counter()
        try:
            with tracing.span("enf.journal.commit", None, appends=len(batch)):
                await self._write(batch, await self._connection(writer))
        except _CONNECTION_ERRORS as exc:
            logger.warning("journal unavailable: %s", exc)
            await self._drop_connection(writer)
            for a in batch:
                _settle(a, Unavailable("database unavailable"))
            return
        except Fenced as exc:
            logger.error("journal write refused: %s", exc)
            for a in batch:
                _settle(a, StaleActivation(a.actor_id))
            if self.on_fenced is not None:
                with contextlib.suppress(Exception):
                    self.on_fenced()
            return
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                _settle(batch[0], _classify(exc, batch[0].actor_id))
                return
            # Isolate the offending append: one transaction each.
            for a in batch:
                await self._commit_batch([a], writer)
            return
        took = time.perf_counter() - started
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("group commit: %d appends in %.1f ms", len(batch), took * 1000)
        self.stats.write_seconds += took
        self.stats.batches += 1
        self.stats.appends += len(batch)
        self.stats.rows += sum(len(a.events) for a in batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        for a in batch:
            _settle(a, None)
        # Hooks run once the appends are settled: a failing hook cannot turn
        # committed appends into errors.
        if self.on_batch is not None:
            with contextlib.suppress(Exception):
                self.on_batch(len(batch), took)
        if self.on_outbox is not None and any(
            p.table is OUTBOX for a in batch for p in a.projections
        ):
            self.on_outbox()

    async def _write(self, batch: list[Append], conn: asyncpg.Connection) -> None:
        """The whole batch in one statement (one round trip, one transaction);
        with generic statements, in an explicit transaction around it."""
        events = [e for a in batch for e in a.events]
        idem = {(a.actor_id, r.user_id, r.request_id): r for a in batch for r in a.idempotency}
        snaps = {a.actor_id: a.snapshot for a in batch if a.snapshot is not None}
        rows: dict[ProjectionTable, dict[Any, tuple[Any, ...]]] = {t: {} for t in self._tables}
        statements: dict[str, list[tuple[Any, ...]]] = {}
        for a in batch:
            for p in a.projections:
                rows[p.table][p.key] = p.row
            for sql, values in a.statements:
                statements.setdefault(sql, []).append(values)
        args: list[Any] = [
            [e.actor_id for e in events],
            [e.seq for e in events],
            [e.name for e in events],
            [e.data for e in events],
            [parse_iso(e.at) for e in events],
            [e.prev_hash for e in events],
            [e.hash for e in events],
            [k[0] for k in idem],
            [k[1] for k in idem],
            [k[2] for k in idem],
            [r.fingerprint for r in idem.values()],
            [r.reply for r in idem.values()],
            list(snaps),
            [s[0] for s in snaps.values()],
            [s[1] for s in snaps.values()],
        ]
        for table in self._tables:
            table_rows = list(rows[table].values())
            args.extend([row[i] for row in table_rows] for i in range(len(table.columns)))
        if not statements and self.fence is None:
            await conn.execute(self._batch_sql, *args)
            return
        async with conn.transaction():
            if self.fence is not None:
                shard, epoch = self.fence
                now = await conn.fetchval(
                    "SELECT epoch FROM cluster_shards WHERE shard = $1 FOR SHARE", shard
                )
                if now != epoch:
                    raise Fenced(f"shard {shard} is at epoch {now}, this incarnation has {epoch}")
            await conn.execute(self._batch_sql, *args)
            for sql, rows_ in statements.items():
                await conn.executemany(sql, rows_)

    # -- reads ------------------------------------------------------------------

    async def read(
        self, actor_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        sql = (
            "SELECT seq, name, data, at, prev_hash, hash FROM journal"
            " WHERE actor_id = $1 AND seq > $2 ORDER BY seq"
        )
        args: list[Any] = [actor_id, after_seq]
        if limit is not None:
            sql += " LIMIT $3"
            args.append(limit)
        try:
            rows = await self._pool.fetch(sql, *args)
        except _CONNECTION_ERRORS as exc:
            raise Unavailable("database unavailable") from exc
        return [_row_event(actor_id, r) for r in rows]

    async def load_snapshot(self, actor_id: str) -> tuple[int, dict[str, Any]] | None:
        row = await self._pool.fetchrow(
            "SELECT seq, state FROM snapshots WHERE actor_id = $1", actor_id
        )
        return None if row is None else (row["seq"], row["state"])

    async def load_idempotency(self, actor_id: str) -> list[IdempotencyRecord]:
        rows = await self._pool.fetch(
            "SELECT user_id, request_id, fingerprint, reply FROM idempotency WHERE actor_id = $1",
            actor_id,
        )
        return [
            IdempotencyRecord(r["user_id"], r["request_id"], r["fingerprint"], r["reply"])
            for r in rows
        ]


def _row_event(actor_id: str, r: asyncpg.Record) -> StoredEvent:
    at: datetime = r["at"]
    return StoredEvent(actor_id, r["seq"], r["name"], r["data"], iso(at), r["prev_hash"], r["hash"])


def _classify(exc: asyncpg.PostgresError, actor_id: str) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        logger.warning("stale activation of %s: %s", actor_id, exc)
        return StaleActivation(actor_id)
    logger.error("journal refused an append of %s: %s", actor_id, exc)
    return Unavailable("the database refused the change")


def _settle(a: Append, exc: Exception | None) -> None:
    if a.future is None or a.future.done():
        return
    if exc is None:
        a.future.set_result(None)
    else:
        a.future.set_exception(exc)

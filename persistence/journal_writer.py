"""The journal's group commit: appends queue up, and a few writer tasks each
commit everything waiting in one statement (one round trip, one
transaction), so concurrent actors share the cost of a commit.

A batch that fails on one actor's rows (a stale activation hitting the
`(actor_id, seq)` key, a value Postgres refuses) is retried one append per
transaction, so only the offending actor sees the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from config import tracing
from core.loops import BackgroundLoop, stop_loops
from persistence import in_doubt
from persistence.events import (
    CONNECTION_ERRORS as CONNECTION_ERRORS,
)
from persistence.events import (
    Append,
    Fenced,
    Refused,
    StaleActivation,
    Unavailable,
)
from persistence.pool import compact_json
from persistence.projections import OUTBOX, OUTBOX_DESTINATION, TABLES, ProjectionTable

logger = logging.getLogger(__name__)


def _rows_of(param: int, columns: Sequence[str], types: Sequence[str]) -> str:
    """A table of rows from one parameter: a JSON array of objects."""
    defs = ", ".join(f"{c} {t}" for c, t in zip(columns, types, strict=True))
    return f"json_to_recordset(${param}::json) AS u({defs})"


_JOURNAL = (
    ("actor_id", "seq", "name", "data", "at", "prev_hash", "hash"),
    ("text", "bigint", "text", "jsonb", "timestamptz", "text", "text"),
)
_IDEMPOTENCY = (
    ("actor_id", "user_id", "request_id", "fingerprint", "reply"),
    ("text", "text", "text", "text", "jsonb"),
)
_SNAPSHOTS = (("actor_id", "seq", "state"), ("text", "bigint", "jsonb"))


def batch_sql(tables: Sequence[ProjectionTable]) -> str:
    """One statement for a whole batch: journal rows, idempotency records,
    snapshots and each projection table, every one a table of rows from one
    parameter (an empty array inserts nothing). Data-modifying CTEs all run,
    in one transaction.

    Each table travels as one JSON text, encoded by orjson: asyncpg encodes
    an array parameter element by element, with isinstance checks against
    abstract classes on each, which were the largest part of its work on the
    statement (a batch of two appends: 1.2 ms of the client's CPU with arrays,
    0.95 ms as JSON, in a microbenchmark)."""
    held = 4 + len(tables)  # the last parameter: {destination: reason}
    parts = [
        f"held AS (SELECT key AS destination, value AS reason FROM json_each_text(${held}::json))",
        f"j AS (INSERT INTO journal ({', '.join(_JOURNAL[0])})"
        f" SELECT u.* FROM {_rows_of(1, *_JOURNAL)})",
        f"i AS (INSERT INTO idempotency ({', '.join(_IDEMPOTENCY[0])})"
        f" SELECT u.* FROM {_rows_of(2, *_IDEMPOTENCY)}"
        " ON CONFLICT (actor_id, user_id, request_id) DO UPDATE"
        " SET fingerprint = EXCLUDED.fingerprint, reply = EXCLUDED.reply, created_at = now())",
        f"s AS (INSERT INTO snapshots ({', '.join(_SNAPSHOTS[0])})"
        f" SELECT u.* FROM {_rows_of(3, *_SNAPSHOTS)}"
        " ON CONFLICT (actor_id) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state,"
        " at = now() WHERE snapshots.seq <= EXCLUDED.seq)",
    ]
    for k, t in enumerate(tables):
        if t.statement:
            parts.append(
                f"p{k} AS ({t.statement.format(rows=_rows_of(4 + k, t.columns, t.types))})"
            )
            continue
        columns = ", ".join((*t.columns, *(c for c, _ in t.computed)))
        values = ", ".join(("u.*", *(e for _, e in t.computed)))
        parts.append(
            f"p{k} AS (INSERT INTO {t.table} ({columns})"
            f" SELECT {values} FROM {_rows_of(4 + k, t.columns, t.types)} {t.joined}"
            + (f" ON CONFLICT {t.on_conflict})" if t.on_conflict else ")")
        )
    return "WITH " + ",\n".join(parts) + "\nSELECT 1"


def batch_args(
    batch: list[Append], tables: Sequence[ProjectionTable], held: Mapping[str, str] | None = None
) -> list[str]:
    """The arguments of `batch_sql` for a batch: one JSON array of rows per
    table, then the outbox destinations held for want of a sender (with the
    reason). A later row for the same key (idempotency, snapshot, projection)
    replaces an earlier one."""
    idem = {(a.actor_id, r.user_id, r.request_id): r for a in batch for r in a.idempotency}
    snaps = {a.actor_id: a.snapshot for a in batch if a.snapshot is not None}
    rows: dict[ProjectionTable, dict[Any, tuple[Any, ...]]] = {t: {} for t in tables}
    for a in batch:
        for p in a.projections:
            if p.table.first_wins:
                rows[p.table].setdefault(p.key, p.row)
            else:
                rows[p.table][p.key] = p.row
    tabled: list[list[dict[str, Any]]] = [
        [
            {
                "actor_id": e.actor_id,
                "seq": e.seq,
                "name": e.name,
                "data": e.data,
                "at": e.at,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for a in batch
            for e in a.events
        ],
        [
            {
                "actor_id": k[0],
                "user_id": k[1],
                "request_id": k[2],
                "fingerprint": r.fingerprint,
                "reply": r.reply,
            }
            for k, r in idem.items()
        ],
        [{"actor_id": k, "seq": v[0], "state": v[1]} for k, v in snaps.items()],
    ]
    for table in tables:
        tabled.append([dict(zip(table.columns, row, strict=True)) for row in rows[table].values()])
    return [*(compact_json(t).decode() for t in tabled), compact_json(held or {}).decode()]


@dataclass(slots=True)
class JournalStats:
    batches: int = 0
    appends: int = 0
    rows: int = 0
    max_batch: int = 0
    write_seconds: float = 0.0

    def count(self, batch: list[Append], took: float) -> None:
        self.write_seconds += took
        self.batches += 1
        self.appends += len(batch)
        self.rows += sum(len(a.events) for a in batch)
        self.max_batch = max(self.max_batch, len(batch))

    def summary(self) -> str:
        avg = self.appends / self.batches if self.batches else 0.0
        ms = 1000 * self.write_seconds / self.batches if self.batches else 0.0
        return (
            f"{self.batches} batches, {self.appends} appends, {self.rows} events,"
            f" {avg:.1f} appends/batch (max {self.max_batch}), {ms:.2f} ms/batch"
        )


class GroupCommit:
    """Appends, committed by group commit: `append` resolves once committed."""

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
        self._max_batch = max_batch
        self._writers = [
            BackgroundLoop(f"journal-writer-{i}", functools.partial(self._drain, i))
            for i in range(writers)
        ]
        self._running = False
        self._held: list[asyncpg.Connection | None] = [None] * writers
        # Called after a batch that wrote outbox rows (wakes the delivery worker).
        self.on_outbox: Callable[[], None] | None = None
        # Called after each committed batch with (appends, seconds), for metrics.
        self.on_batch: Callable[[int, float], object] | None = None
        # Outbox destinations with no sender here, and why: their rows are
        # written held (the delivery worker of this process says which).
        self.held: dict[str, str] = {}
        # (shard, epoch) in cluster mode: every batch checks, under a share lock
        # of the shard's row, that the shard's epoch is still this one.
        self.fence: tuple[int, int] | None = None
        # Called once when a batch finds the fence moved (the shard stops itself).
        self.on_fenced: Callable[[], object] | None = None
        self.stats = JournalStats()

    async def start(self) -> None:
        self._running = True
        for writer in self._writers:
            writer.start()

    async def stop(self) -> None:
        """Let queued appends commit (up to 5 s), then stop the writers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5)
        await stop_loops(self._writers)
        self._running = False
        for i in range(len(self._held)):
            await self._drop_connection(i)
        logger.info("journal stopped: %s", self.stats.summary())

    async def append(self, append: Append) -> None:
        """Resolve once `append` is committed; raise Unavailable or StaleActivation."""
        if not self._running:
            raise Unavailable("journal is not running")
        append.future = asyncio.get_running_loop().create_future()
        with tracing.span("enf.journal.append", None, events=len(append.events)):
            self._queue.put_nowait(append)
            await append.future

    async def _connection(self, writer: int) -> asyncpg.Connection:
        """Each writer holds one connection: no pool round trip (acquire,
        reset on release) per batch."""
        conn = self._held[writer]
        if conn is None or not _usable(conn):
            self._held[writer] = None
            conn = self._held[writer] = await self._pool.acquire()
        return conn

    async def _drop_connection(self, writer: int) -> None:
        conn, self._held[writer] = self._held[writer], None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=2)

    async def _drain(self, writer: int) -> None:
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
                    a.settle(Unavailable("server shutting down"))
                raise
            except Exception:  # never let a writer die
                logger.exception("journal writer failed")
                for a in batch:
                    a.settle(Unavailable("journal error"))
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[Append], writer: int, retry: bool = True) -> None:
        started = time.perf_counter()
        try:
            conn = await self._connection(writer)
        except CONNECTION_ERRORS as exc:  # nothing was sent: nothing applied
            logger.warning("journal unavailable: %s", exc)
            for a in batch:
                a.settle(Unavailable("database unavailable"))
            return
        try:
            with tracing.span("enf.journal.commit", None, appends=len(batch)):
                await self._write(batch, conn)
        except CONNECTION_ERRORS as exc:
            # Sent, and the answer lost: find out whether it landed (PROTOCOL §7).
            logger.warning("journal connection lost during a commit: %s", exc)
            pid = _server_pid(conn)
            await self._drop_connection(writer)
            if await in_doubt.landed(self._pool, pid, batch):
                self._committed(batch, time.perf_counter() - started)
            elif retry:  # known not applied: once more, on a new connection
                await self._commit_batch(batch, writer, retry=False)
            else:
                for a in batch:
                    a.settle(Unavailable("database unavailable"))
        except Fenced as exc:
            logger.error("journal write refused: %s", exc)
            self._fenced(batch)
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                batch[0].settle(_classify(exc, batch[0].actor_id))
                return
            # Isolate the offending append: one transaction each.
            for a in batch:
                await self._commit_batch([a], writer, retry)
        else:
            self._committed(batch, time.perf_counter() - started)

    def _fenced(self, batch: list[Append]) -> None:
        for a in batch:
            a.settle(StaleActivation(a.actor_id))
        if self.on_fenced is not None:
            with contextlib.suppress(Exception):
                self.on_fenced()

    def _committed(self, batch: list[Append], took: float) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("group commit: %d appends in %.1f ms", len(batch), took * 1000)
        self.stats.count(batch, took)
        for a in batch:
            a.settle(None)
        # Hooks run once the appends are settled: a failing hook cannot turn
        # committed appends into errors.
        if self.on_batch is not None:
            with contextlib.suppress(Exception):
                self.on_batch(len(batch), took)
        if self.on_outbox is not None and any(
            p.table is OUTBOX and p.row[OUTBOX_DESTINATION] not in self.held
            for a in batch
            for p in a.projections
        ):
            self.on_outbox()  # a row due now: not one written held

    async def _write(self, batch: list[Append], conn: asyncpg.Connection) -> None:
        """The whole batch in one statement (one round trip, one transaction);
        with generic statements, in an explicit transaction around it."""
        args = batch_args(batch, self._tables, self.held)
        statements: dict[str, list[tuple[Any, ...]]] = {}
        for a in batch:
            for sql, values in a.statements:
                statements.setdefault(sql, []).append(values)
        if not statements and self.fence is None:
            await conn.execute(self._batch_sql, *args)
            return
        async with conn.transaction():
            if self.fence is not None:
                await _check_fence(conn, *self.fence)
            await conn.execute(self._batch_sql, *args)
            for sql, rows in statements.items():
                await conn.executemany(sql, rows)


def _usable(conn: asyncpg.Connection) -> bool:
    """False for a lost connection, and for one the pool took back when it was
    lost (asyncpg releases a pooled connection whose socket closed; its proxy
    then raises on every call): the writer takes a new one."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _server_pid(conn: asyncpg.Connection) -> int | None:
    try:
        pid: int = conn.get_server_pid()
    except asyncpg.InterfaceError:  # already given back to the pool
        return None
    return pid


async def _check_fence(conn: asyncpg.Connection, shard: int, epoch: int) -> None:
    now = await conn.fetchval("SELECT epoch FROM cluster_shards WHERE shard = $1 FOR SHARE", shard)
    if now != epoch:
        raise Fenced(f"shard {shard} is at epoch {now}, this incarnation has {epoch}")


def _classify(exc: asyncpg.PostgresError, actor_id: str) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        logger.warning("stale activation of %s: %s", actor_id, exc)
        return StaleActivation(actor_id)
    logger.error("journal refused an append of %s: %s", actor_id, exc)
    return Refused("the database refused the change")

"""The transactional outbox: its rows and every query over them.

Rows are written by actors in the same transaction as the journal events
that cause them (a batched projection table, `persistence.projections.OUTBOX`),
so an event for the outside world exists exactly when its cause does. Each
row's id is derived from its cause (session, seq, type, recipient): a
re-commit cannot produce a second id, and receivers dedupe on it.

The worker that delivers them is delivery.worker; what it reads and writes
here: the head of each pending stream, and a row's outcome.

A payload never holds a usable signed link (the envelope share link of a
distribution's SMS and webhook): every row is written through `_row`, which
withholds link signatures (`core.links.withhold_signatures`); the sender
signs the same link again just before sending.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from core.links import withhold_signatures
from core.text import map_strings
from persistence.filters import where
from persistence.projections import OUTBOX, Projection

logger = logging.getLogger(__name__)

_NS = uuid.UUID("6f2d7a52-5d0c-4f3e-9a43-1f0e2c8b7d11")


def event_id(*parts: Any) -> str:
    return str(uuid.uuid5(_NS, "/".join(str(p) for p in parts)))


def _row(
    eid: str,
    stream: str,
    session_id: str | None,
    destination: str,
    type_: str,
    payload: dict[str, Any],
    recipient: int | None,
) -> Projection:
    """The one way an outbox row is made: signed links in it withheld."""
    kept = map_strings(payload, withhold_signatures)
    return Projection(OUTBOX, (eid, stream, session_id, destination, type_, kept, recipient))


def webhook_event(
    session_id: str,
    seq: int,
    type_: str,
    data: dict[str, Any],
    at: str,
    recipient: int | None = None,
) -> Projection:
    """A domain event for ENF_WEBHOOK_URL: the body receivers get."""
    eid = event_id(session_id, seq, type_, recipient)
    payload = {
        "id": eid,
        "type": type_,
        "session_id": session_id,
        "seq": seq,
        "occurred_at": at,
        "data": data,
    }
    return _row(eid, f"webhook:{session_id}", session_id, "webhook", type_, payload, recipient)


def sms_message(
    stream: str,
    session_id: str | None,
    key: Any,
    to_sealed: str,
    body: str,
    recipient: int | None,
    context: str | None = None,
) -> Projection:
    """A text message; `to` stays sealed until the moment it is sent (with
    `context`, the associated data it was sealed with; default the session)."""
    eid = event_id(stream, key, "sms", recipient)
    payload = {"id": eid, "to": to_sealed, "body": body, "context": context or session_id}
    return _row(eid, f"sms:{stream}", session_id, "sms", "sms", payload, recipient)


# One destination's pending rows in the order they fall due (index
# outbox_pending_by_time), at most a window of them, each kept only if it
# heads its stream (no earlier pending row: index outbox_stream). A row found
# behind a head that waits out a retry is moved to the head's time (it cannot
# go first), so later polls do not walk it again; `reschedule` and `hold`
# move the rows behind a head the same way. A poll costs its window, not the
# pending outbox. These statements are planned each time (`_planned_now`),
# and a stream's rows are "not delivered or dead" rather than "pending": on a
# table not yet analyzed, the planner otherwise reaches for the index of
# pending rows (status, n) and filters every one of them by stream.
DUE_SQL = (
    "WITH c AS MATERIALIZED (SELECT o.id, o.n, o.next_attempt_at,"
    " h.next_attempt_at AS head_at, h.last_error AS head_error FROM outbox o"
    " LEFT JOIN LATERAL (SELECT p.next_attempt_at, p.last_error FROM outbox p"
    " WHERE p.stream = o.stream AND p.n < o.n AND p.status NOT IN ('delivered', 'dead')"
    " ORDER BY p.n LIMIT 1) h ON true"
    " WHERE o.status = 'pending' AND o.destination = $2 AND o.next_attempt_at <= now()"
    " ORDER BY o.next_attempt_at, o.n LIMIT $3),"
    " held AS (UPDATE outbox o SET next_attempt_at = c.head_at, last_error = CASE"
    " WHEN c.head_at = 'infinity' THEN c.head_error ELSE o.last_error END FROM c"
    " WHERE o.id = ANY(ARRAY(SELECT id FROM c WHERE head_at > now())) AND o.id = c.id)"
    " SELECT o.id, o.stream, o.session_id, o.destination, o.type, o.payload, o.recipient,"
    " o.attempts, o.next_attempt_at FROM c JOIN outbox o ON o.id = c.id"
    " WHERE c.head_at IS NULL ORDER BY c.next_attempt_at, c.n LIMIT $1"
)

# Due rows a poll looks at per destination, heads or not.
SCAN_WINDOW = 1000


Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def _planned_now(db: Db, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run a statement that walks an index of the outbox with a plan made
    for this run. A generic plan, which Postgres reuses for a prepared
    statement, is made from the statistics of its day: one made while the
    table was empty (a new database, until autovacuum first analyzes it)
    was seen to walk every pending row on each poll (the partial index of
    pending rows looks free on an empty table). Planning each time costs
    a fraction of a millisecond, and only the delivery worker pays it."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _planned_now(conn, sql, *args)
    async with db.transaction():
        await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return list(await db.fetch(sql, *args))


async def due(db: Db, limit: int, destinations: Sequence[str]) -> list[asyncpg.Record]:
    """The oldest pending row of each stream whose time has come, soonest
    first, for the destinations given (on a `Poller`'s connection, planned
    each time by its setting; elsewhere by `_planned_now`)."""
    rows: list[asyncpg.Record] = []
    for destination in destinations:
        args = (limit, destination, max(limit, SCAN_WINDOW))
        if isinstance(db, asyncpg.Pool):
            rows += await _planned_now(db, DUE_SQL, *args)
        else:
            rows += await db.fetch(DUE_SQL, *args)
    if len(destinations) > 1:
        rows.sort(key=lambda r: r["next_attempt_at"])
    return rows[:limit]


class Poller:
    """The delivery worker's poll on a connection of its own that plans each
    statement each time (as `_planned_now`, without a transaction around
    every poll): one round trip a poll."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    async def due(self, limit: int, destinations: Sequence[str]) -> list[asyncpg.Record]:
        """As `due`; on any error the connection goes back to the pool."""
        try:
            if self._conn is None:
                self._conn = await self._pool.acquire()
                await self._conn.execute("SET plan_cache_mode = force_custom_plan")
            return await due(self._conn, limit, destinations)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.execute("RESET plan_cache_mode")
        with contextlib.suppress(Exception):
            await self._pool.release(conn, timeout=2)


async def mark_delivered(pool: asyncpg.Pool, delivery_id: str, attempts: int) -> None:
    await pool.execute(
        "UPDATE outbox SET status = 'delivered', attempts = $2, delivered_at = now(),"
        " last_error = NULL WHERE id = $1",
        delivery_id,
        attempts,
    )


async def mark_dead(pool: asyncpg.Pool, delivery_id: str, attempts: int, why: str | None) -> None:
    await pool.execute(
        "UPDATE outbox SET status = 'dead', attempts = $2, last_error = $3 WHERE id = $1",
        delivery_id,
        attempts,
        why,
    )


RESCHEDULE_SQL = (
    "WITH h AS (UPDATE outbox SET attempts = $2, last_error = $3, next_attempt_at = $4"
    " WHERE id = $1 AND status NOT IN ('delivered', 'dead') RETURNING stream, n)"
    " UPDATE outbox o SET next_attempt_at = $4 WHERE o.stream = (SELECT stream FROM h)"
    " AND o.n > (SELECT n FROM h) AND o.status NOT IN ('delivered', 'dead')"
    " AND o.next_attempt_at < $4"
)


async def reschedule(db: Db, delivery_id: str, attempts: int, error: str, delay_s: float) -> None:
    """The row's next attempt later; the rows behind it in its stream wait
    as long (they cannot go before it), so the poll does not walk them."""
    await _planned_now(
        db,
        RESCHEDULE_SQL,
        delivery_id,
        attempts,
        error,
        datetime.now(UTC) + timedelta(seconds=delay_s),
    )


HOLD_SQL = (
    "WITH h AS (UPDATE outbox SET last_error = $2, next_attempt_at = 'infinity'"
    " WHERE id = $1 AND status NOT IN ('delivered', 'dead') RETURNING stream, n)"
    " UPDATE outbox o SET next_attempt_at = 'infinity', last_error = $2"
    " WHERE o.stream = (SELECT stream FROM h) AND o.n > (SELECT n FROM h)"
    " AND o.status NOT IN ('delivered', 'dead')"
)


async def hold(db: Db, delivery_id: str, why: str) -> None:
    """The row waits with no time set (its destination has no sender), and
    the rows behind it with it, for the same reason; `release_held` gives
    them a time again."""
    await _planned_now(
        db,
        HOLD_SQL,
        delivery_id,
        why,
    )


async def release_held(pool: asyncpg.Pool, destination: str) -> int:
    """A destination's held rows due now (it has a sender); how many."""
    done: str = await pool.execute(
        "UPDATE outbox SET next_attempt_at = now() WHERE destination = $1"
        " AND status = 'pending' AND next_attempt_at = 'infinity'",
        destination,
    )
    return int(done.split()[-1])


async def held(pool: asyncpg.Pool, destination: str) -> int:
    """How many of a destination's rows wait for a sender."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE destination = $1 AND status = 'pending'"
        " AND next_attempt_at = 'infinity'",
        destination,
    )
    return n


async def final_outcomes(pool: asyncpg.Pool, session_id: str) -> list[dict[str, Any]]:
    """A session's recipient deliveries that are final (delivered or dead)."""
    rows = await pool.fetch(
        "SELECT id, recipient, status, last_error FROM outbox WHERE session_id = $1"
        " AND recipient IS NOT NULL AND status <> 'pending' ORDER BY n",
        session_id,
    )
    return [
        {
            "recipient": r["recipient"],
            "delivery_id": r["id"],
            "status": "delivered" if r["status"] == "delivered" else "dead_letter",
            "reason": r["last_error"] if r["status"] == "dead" else None,
        }
        for r in rows
    ]


async def replay(pool: asyncpg.Pool, delivery_id: str) -> asyncpg.Record | None:
    """A dead letter back to pending, attempts reset; None if it is not dead."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now(),"
        " last_error = NULL WHERE id = $1 AND status = 'dead' RETURNING *",
        delivery_id,
    )
    return row


# What the admin API shows of a delivery.
# next_attempt_at is null while a row waits for its destination to have a sender.
_DELIVERY_COLUMNS = (
    "id, session_id, destination, type, payload, recipient, status, attempts,"
    " CASE WHEN next_attempt_at = 'infinity' THEN NULL ELSE next_attempt_at END"
    " AS next_attempt_at, last_error, created_at, delivered_at"
)


async def deliveries(
    pool: asyncpg.Pool, status: str | None = None, session_id: str | None = None
) -> list[asyncpg.Record]:
    """The latest 500 rows, newest first (of a status, of a session, if given)."""
    clause, args = where((("status", "=", status), ("session_id", "=", session_id)))
    sql = f"SELECT {_DELIVERY_COLUMNS} FROM outbox" + clause + " ORDER BY n DESC LIMIT 500"
    rows: list[asyncpg.Record] = await pool.fetch(sql, *args)
    return rows


async def delivery(pool: asyncpg.Pool, delivery_id: str) -> asyncpg.Record | None:
    """One row, as `deliveries` shows it; None if there is no such row."""
    row: asyncpg.Record | None = await pool.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE id = $1", delivery_id
    )
    return row


async def status_of(pool: asyncpg.Pool, delivery_id: str) -> str | None:
    """A row's status (pending, delivered, dead); None if there is no such row."""
    status: str | None = await pool.fetchval("SELECT status FROM outbox WHERE id = $1", delivery_id)
    return status

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

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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


# The pending rows in the order they fall due (index outbox_pending_by_time),
# each kept only if it heads its stream (no earlier pending row: index
# outbox_due). The cost is the rows that are due, not the pending outbox: a
# row behind a head that is waiting out a retry has its time moved to the
# head's (`reschedule`), so it is not walked over on every poll.
DUE_SQL = (
    "SELECT id, stream, session_id, destination, type, payload, recipient, attempts,"
    " next_attempt_at FROM outbox o WHERE status = 'pending' AND next_attempt_at <= now()"
    " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.stream = o.stream"
    " AND p.status = 'pending' AND p.n < o.n)"
    " ORDER BY next_attempt_at, n LIMIT $1"
)


async def due(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """The oldest pending row of each stream whose time has come, soonest first."""
    rows: list[asyncpg.Record] = await pool.fetch(DUE_SQL, limit)
    return rows


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


async def reschedule(
    pool: asyncpg.Pool, delivery_id: str, attempts: int, error: str, delay_s: float
) -> None:
    """The row's next attempt later; the rows behind it in its stream wait
    as long (they cannot go before it), so the poll does not walk them."""
    await pool.execute(
        "WITH h AS (UPDATE outbox SET attempts = $2, last_error = $3, next_attempt_at = $4"
        " WHERE id = $1 AND status = 'pending' RETURNING stream, n)"
        " UPDATE outbox o SET next_attempt_at = $4 FROM h WHERE o.stream = h.stream"
        " AND o.status = 'pending' AND o.n > h.n AND o.next_attempt_at < $4",
        delivery_id,
        attempts,
        error,
        datetime.now(UTC) + timedelta(seconds=delay_s),
    )


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
_DELIVERY_COLUMNS = (
    "id, session_id, destination, type, payload, recipient, status, attempts,"
    " next_attempt_at, last_error, created_at, delivered_at"
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

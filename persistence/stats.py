"""Counts read at scrape time for `/metrics`: sessions by state, offers by
outcome, outbox rows and delivery attempts by kind and status, and the
recordings awaited after `video.end`."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


async def _counts(pool: asyncpg.Pool, sql: str) -> dict[str, int]:
    return dict(await pool.fetch(sql))


async def sessions_by_state(pool: asyncpg.Pool) -> dict[str, int]:
    return await _counts(pool, "SELECT state, count(*) FROM sessions GROUP BY 1")


async def offers_by_state(pool: asyncpg.Pool) -> dict[str, int]:
    return await _counts(pool, "SELECT state, count(*) FROM offers GROUP BY 1")


@dataclass(frozen=True, slots=True)
class OutboxFigure:
    kind: str  # payment (payment.*), else the destination: webhook, sms
    status: str  # pending, delivered, dead
    rows: int
    attempts: int  # summed over the rows (a replayed row starts again at 0)


OUTBOX_KINDS = ("payment", "webhook", "sms")

_OUTBOX = (
    "SELECT CASE WHEN type LIKE 'payment.%' THEN 'payment' ELSE destination END,"
    " status, count(*), coalesce(sum(attempts), 0)"
    " FROM outbox GROUP BY 1, 2"
)


async def outbox_by_kind(pool: asyncpg.Pool) -> list[OutboxFigure]:
    """Outbox rows and their attempts by kind and status."""
    return [OutboxFigure(k, s, int(n), int(a)) for k, s, n, a in await pool.fetch(_OUTBOX)]


# Sessions past video.end (VIDEO_COMPLETED) whose snapshot has no recording
# yet, and since when: the time of their move to VIDEO_COMPLETED, from the
# journal (found by its primary key, one session's events at a time).
_AWAITED = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(j.at)), 0)::float8"
    " FROM sessions s JOIN journal j ON j.actor_id = 'session:' || s.session_id"
    " AND j.name = 'session.state' AND j.data->>'state' = 'VIDEO_COMPLETED'"
    " WHERE s.state = 'VIDEO_COMPLETED'"
    " AND coalesce(s.snapshot->'recording', 'null'::jsonb) = 'null'::jsonb"
)


async def recordings_awaited(pool: asyncpg.Pool) -> tuple[int, float]:
    """How many sessions await their recording after `video.end`, and the
    longest wait in seconds (0 when none)."""
    row = await pool.fetchrow(_AWAITED)
    assert row is not None  # an aggregate always answers one row
    return int(row[0]), max(0.0, float(row[1]))

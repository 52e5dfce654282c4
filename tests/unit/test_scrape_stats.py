"""The figures `GET /metrics` reads from Postgres for operations
(persistence.stats): outbox rows and attempts by kind (payment events apart)
and status, and the sessions past `video.end` awaiting their recording, with
the longest wait. Rows are written here as the actors would leave them."""

from __future__ import annotations

from typing import Any

import asyncpg

from persistence import stats
from persistence.stats import OutboxFigure


async def _outbox(
    pool: asyncpg.Pool, n: int, type_: str, dest: str, status: str, tries: int
) -> None:
    await pool.execute(
        "INSERT INTO outbox (id, stream, session_id, destination, type, payload, status,"
        " attempts, next_attempt_at) VALUES ($1, $2, 's1', $3, $4, '{}', $5, $6,"
        " now() + interval '1 day')",
        f"e{n}",
        f"{dest}:s1",
        dest,
        type_,
        status,
        tries,
    )


async def test_outbox_by_kind_tells_payment_events_apart(pool: asyncpg.Pool) -> None:
    assert await stats.outbox_by_kind(pool) == []
    for n, row in enumerate(
        (
            ("payment.hold", "webhook", "delivered", 3),
            ("payment.release", "webhook", "delivered", 1),
            ("payment.refund", "webhook", "dead", 12),
            ("session.requested", "webhook", "pending", 2),
            ("document.distributed", "sms", "delivered", 1),
        )
    ):
        await _outbox(pool, n, *row)
    got = sorted(await stats.outbox_by_kind(pool), key=lambda f: (f.kind, f.status))
    assert got == [
        OutboxFigure("payment", "dead", 1, 12),
        OutboxFigure("payment", "delivered", 2, 4),
        OutboxFigure("sms", "delivered", 1, 1),
        OutboxFigure("webhook", "pending", 1, 2),
    ]
    assert {f.kind for f in got} <= set(stats.OUTBOX_KINDS)


async def _session(
    pool: asyncpg.Pool, sid: str, state: str, recording: dict[str, Any] | None, ago_s: float
) -> None:
    """A session's row and its move to `state`, `ago_s` seconds ago."""
    snapshot = {"session_id": sid, "state": state, "recording": recording}
    await pool.execute(
        "INSERT INTO sessions (session_id, state, customer_id, seq, snapshot, request,"
        " created_at, updated_at) VALUES ($1, $2, 'c1', 5, $3::jsonb, '{}', now(), now())",
        sid,
        state,
        snapshot,  # the pool encodes jsonb (persistence.pool)
    )
    await pool.execute(
        "INSERT INTO journal (actor_id, seq, name, data, at, prev_hash, hash)"
        " VALUES ($1, 5, 'session.state', $2::jsonb, now() - make_interval(secs => $3), '', '')",
        f"session:{sid}",
        {"state": state, "prev": "VIDEO_IN_PROGRESS"},
        ago_s,
    )


async def test_recordings_awaited_counts_only_those_past_video_end_without_one(
    pool: asyncpg.Pool,
) -> None:
    assert await stats.recordings_awaited(pool) == (0, 0.0)
    ready = {"url": "file:///r.mkv", "sha256": "0" * 64, "bytes": 10, "duration_s": 1.0}
    await _session(pool, "waits-long", "VIDEO_COMPLETED", None, 120)
    await _session(pool, "waits-short", "VIDEO_COMPLETED", None, 5)
    await _session(pool, "has-it", "VIDEO_COMPLETED", ready, 900)
    await _session(pool, "in-call", "VIDEO_IN_PROGRESS", None, 900)
    await _session(pool, "failed", "FAILED", None, 900)
    count, longest = await stats.recordings_awaited(pool)
    assert count == 2
    assert 120 <= longest < 180

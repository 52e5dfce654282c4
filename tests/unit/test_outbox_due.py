"""The delivery worker's poll (persistence.outbox.due) on a real Postgres:
only the head of each pending stream, only once it is due, soonest first;
a retried head holds the rows behind it; and the poll's cost follows the
rows that are due, not the pending outbox (it used to read every pending
row on every poll: 16 ms a poll with 1,000 undeliverable messages waiting,
three quarters of Postgres's CPU under load)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from persistence import outbox


async def _put(pool: asyncpg.Pool, rows: list[tuple[str, str, float]]) -> None:
    """(id, stream, seconds from now until due) rows, inserted in order."""
    await pool.executemany(
        "INSERT INTO outbox (id, stream, session_id, destination, type, payload,"
        " next_attempt_at) VALUES ($1, $2, 's', 'webhook', 't', '{}',"
        " now() + make_interval(secs => $3))",
        rows,
    )


async def _due_ids(pool: asyncpg.Pool, limit: int = 200) -> list[str]:
    return [r["id"] for r in await outbox.due(pool, limit)]


async def test_only_due_heads_of_streams_soonest_first(pool: asyncpg.Pool) -> None:
    await _put(
        pool,
        [
            ("a1", "A", -5.0),
            ("a2", "A", -9.0),  # behind a1 in its stream, due earlier: still waits
            ("b1", "B", -7.0),
            ("c1", "C", 60.0),  # not due
            ("c2", "C", -9.0),  # due, behind a head that is not
        ],
    )
    assert await _due_ids(pool) == ["b1", "a1"]
    assert await _due_ids(pool, limit=1) == ["b1"]
    await outbox.mark_delivered(pool, "a1", 1)
    await outbox.mark_dead(pool, "b1", 3, "gone")
    assert await _due_ids(pool) == ["a2"]


async def test_a_retried_head_holds_its_stream(pool: asyncpg.Pool) -> None:
    await _put(pool, [("h", "S", -1.0), ("f1", "S", -1.0), ("f2", "S", -1.0), ("x", "X", -1.0)])
    await outbox.reschedule(pool, "h", 1, "503", 30.0)
    times = {
        r["id"]: r["next_attempt_at"]
        for r in await pool.fetch("SELECT id, next_attempt_at FROM outbox")
    }
    assert times["f1"] == times["h"] == times["f2"] > times["x"]
    row = await pool.fetchrow("SELECT attempts, last_error FROM outbox WHERE id = 'h'")
    assert row is not None and (row["attempts"], row["last_error"]) == (1, "503")
    # The others' attempts and errors are theirs, untouched.
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE attempts > 0") == 1
    assert await _due_ids(pool) == ["x"]
    # The head comes due again, then goes: the next row follows at once.
    await pool.execute("UPDATE outbox SET next_attempt_at = now() - interval '1 s'")
    assert await _due_ids(pool) == ["h", "x"]
    await outbox.mark_delivered(pool, "h", 2)
    assert await _due_ids(pool) == ["f1", "x"]


async def test_rescheduling_a_row_no_longer_pending_moves_nothing(pool: asyncpg.Pool) -> None:
    await _put(pool, [("h", "S", -1.0), ("f", "S", -1.0)])
    await outbox.mark_delivered(pool, "h", 1)
    await outbox.reschedule(pool, "h", 1, "late report", 600.0)
    assert await _due_ids(pool) == ["f"]


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


async def _poll_cost(pool: asyncpg.Pool) -> int:
    """Pages the poll touches, from Postgres's own account of running it."""
    async with pool.acquire() as conn:
        text = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + outbox.DUE_SQL, 200)
    plan: dict[str, Any] = (json.loads(text) if isinstance(text, str) else text)[0]["Plan"]
    return _buffers(plan)


async def test_the_poll_costs_the_due_rows_not_the_pending_outbox(pool: asyncpg.Pool) -> None:
    await _put(pool, [(f"d{i}", f"due{i}", -1.0) for i in range(5)])
    await pool.execute("ANALYZE outbox")
    small = await _poll_cost(pool)
    assert await _due_ids(pool) == [f"d{i}" for i in range(5)]
    # 6,000 rows waiting: 2,000 streams whose head is retrying later, with the
    # two rows behind each held by `reschedule`, as after a receiver's outage.
    waiting = [(f"w{s}.{k}", f"wait{s}", -1.0) for s in range(2000) for k in range(3)]
    await _put(pool, waiting)
    for s in range(2000):
        await outbox.reschedule(pool, f"w{s}.0", 1, "down", 300.0)
    # As autovacuum leaves it: the index entries of the rows' earlier times,
    # which the updates left behind, gone.
    await pool.execute("VACUUM ANALYZE outbox")
    large = await _poll_cost(pool)
    assert await _due_ids(pool) == [f"d{i}" for i in range(5)]
    assert large <= 3 * small + 10, (small, large)

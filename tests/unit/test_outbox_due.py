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
import pytest

from persistence import outbox
from persistence.events import Append
from persistence.journal import Journal
from persistence.pool import create_pool


async def _put(
    pool: asyncpg.Pool, rows: list[tuple[str, str, float]], dest: str = "webhook"
) -> None:
    """(id, stream, seconds from now until due) rows, inserted in order."""
    await pool.executemany(
        "INSERT INTO outbox (id, stream, session_id, destination, type, payload,"
        " next_attempt_at) VALUES ($1, $2, 's', $4, 't', '{}',"
        " now() + make_interval(secs => $3))",
        [(*r, dest) for r in rows],
    )


async def _due_ids(
    pool: asyncpg.Pool, limit: int = 200, dests: tuple[str, ...] = ("webhook",)
) -> list[str]:
    return [r["id"] for r in await outbox.due(pool, limit, dests)]


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


async def test_a_row_found_behind_a_waiting_head_waits_as_long(pool: asyncpg.Pool) -> None:
    await _put(pool, [("h", "S", -1.0)])
    await outbox.reschedule(pool, "h", 1, "503", 30.0)
    await _put(pool, [("f", "S", -1.0)])  # came after the head's retry was set
    assert await _due_ids(pool) == []
    times = dict(await pool.fetch("SELECT id, next_attempt_at FROM outbox"))
    assert times["f"] == times["h"]


async def test_only_destinations_with_a_sender_are_polled(pool: asyncpg.Pool) -> None:
    await _put(pool, [("w", "webhook:s", -2.0)])
    await _put(pool, [("m", "sms:s", -1.0), ("m2", "sms:s", -1.0)], dest="sms")
    assert await _due_ids(pool, dests=()) == []
    assert await _due_ids(pool, dests=("sms",)) == ["m"]
    assert await _due_ids(pool, dests=("sms", "webhook")) == ["w", "m"]
    assert await _due_ids(pool, limit=1, dests=("sms", "webhook")) == ["w"]
    # Rows of a destination not polled are left as they were.
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE attempts > 0") == 0


async def test_rescheduling_a_row_no_longer_pending_moves_nothing(pool: asyncpg.Pool) -> None:
    await _put(pool, [("h", "S", -1.0), ("f", "S", -1.0)])
    await outbox.mark_delivered(pool, "h", 1)
    await outbox.reschedule(pool, "h", 1, "late report", 600.0)
    assert await _due_ids(pool) == ["f"]


def _pages(plan: dict[str, Any]) -> int:
    """Pages a plan touched, at most counted twice: the top node's (which
    counts its children's) and each data-modifying node's again (a CTE that
    writes runs after the query and is not counted in it)."""

    def own(p: dict[str, Any]) -> int:
        return int(p.get("Shared Hit Blocks", 0)) + int(p.get("Shared Read Blocks", 0))

    def writes(p: dict[str, Any]) -> int:
        mine = own(p) if p.get("Node Type") == "ModifyTable" else 0
        return mine + sum(writes(c) for c in p.get("Plans", []))

    return own(plan) + writes(plan)


def _buffers(plan: dict[str, Any]) -> int:
    """The plan's pages: the top node counts its children's, except those of
    the data-modifying CTE, which runs after the query."""
    own = int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))
    writes = [p for p in plan.get("Plans", []) if p.get("Subplan Name") == "CTE held"]
    return own + sum(_buffers(p) for p in writes)


async def _poll_cost(pool: asyncpg.Pool) -> int:
    """Pages one poll touches, from Postgres's own account of running it."""
    async with pool.acquire() as conn:
        text = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + outbox.DUE_SQL,
            200,
            "webhook",
            outbox.SCAN_WINDOW,
        )
    plan: dict[str, Any] = (json.loads(text) if isinstance(text, str) else text)[0]["Plan"]
    return _buffers(plan)


async def test_the_poll_costs_the_due_rows_not_the_pending_outbox(pool: asyncpg.Pool) -> None:
    await _put(pool, [(f"d{i}", f"due{i}", -1.0) for i in range(5)])
    await pool.execute("VACUUM ANALYZE outbox")
    small = await _poll_cost(pool)
    assert await _due_ids(pool) == [f"d{i}" for i in range(5)]
    # A receiver's outage: 2,000 streams whose head is retrying later, and
    # 4,000 rows that arrived behind them since, all of them due.
    await _put(pool, [(f"w{s}.0", f"wait{s}", -1.0) for s in range(2000)])
    for s in range(2000):
        await outbox.reschedule(pool, f"w{s}.0", 1, "down", 300.0)
    await _put(pool, [(f"w{s}.{k}", f"wait{s}", -1.0) for k in (1, 2) for s in range(2000)])
    # Each poll walks at most its window, and moves what it found behind
    # a waiting head: five polls and the rows behind are all held.
    for _ in range(5):
        assert await _due_ids(pool) == [f"d{i}" for i in range(5)]
    # As autovacuum leaves it: the index entries of the rows' earlier times,
    # which the updates left behind, gone.
    await pool.execute("VACUUM ANALYZE outbox")
    large = await _poll_cost(pool)
    assert await _due_ids(pool) == [f"d{i}" for i in range(5)]
    assert large <= 3 * small + 10, (small, large)


async def test_rows_held_for_a_sender_wait_untouched_until_released(pool: asyncpg.Pool) -> None:
    await _put(pool, [("h", "S", -1.0), ("f", "S", -1.0)], dest="sms")
    await _put(pool, [("w", "W", -1.0)])
    assert await _due_ids(pool, dests=("sms", "webhook")) == ["h", "w"]
    await outbox.hold(pool, "h", "SMS not configured")
    await _put(pool, [("g", "S", -1.0)], dest="sms")  # arrives while held
    assert await _due_ids(pool, dests=("sms", "webhook")) == ["w"]
    assert await _due_ids(pool, dests=("sms", "webhook")) == ["w"]  # g: held on sight
    assert await outbox.held(pool, "sms") == 3
    shown = {r["id"]: r for r in await outbox.deliveries(pool)}
    assert shown["h"]["next_attempt_at"] is None and shown["w"]["next_attempt_at"] is not None
    assert shown["h"]["last_error"] == "SMS not configured" and shown["h"]["attempts"] == 0
    assert await outbox.release_held(pool, "webhook") == 0
    assert await outbox.release_held(pool, "sms") == 3
    assert await outbox.held(pool, "sms") == 0
    assert await _due_ids(pool, dests=("sms",)) == ["h"]


async def test_rows_journaled_behind_a_waiting_head_wait_as_long(pool: asyncpg.Pool) -> None:
    """Rows come from actors through the journal's batch: each falls due no
    sooner than the latest pending row of its stream."""
    journal = Journal(pool)
    await journal.start()
    try:

        async def journaled(*rows: tuple[str, str]) -> None:
            await journal.append(
                Append(
                    "s",
                    projections=[
                        outbox.webhook_event(stream, 1, kind, {}, "2026-12-03T00:00:00.000Z")
                        for stream, kind in rows
                    ],
                )
            )

        await journaled(("held", "a"), ("retried", "a"), ("free", "a"))
        ids = {r["stream"]: r["id"] for r in await outbox.due(pool, 10, ["webhook"])}
        assert set(ids) == {"webhook:held", "webhook:retried", "webhook:free"}
        await outbox.hold(pool, ids["webhook:held"], "no receiver")
        await outbox.reschedule(pool, ids["webhook:retried"], 1, "503", 120.0)
        await outbox.mark_delivered(pool, ids["webhook:free"], 1)
        await journaled(("held", "b"), ("retried", "b"), ("free", "b"))
        times = {
            (r["stream"], r["type"]): r["next_attempt_at"]
            for r in await pool.fetch("SELECT stream, type, next_attempt_at FROM outbox")
        }
        assert times["webhook:held", "b"] == times["webhook:held", "a"]  # infinity
        why = dict(
            await pool.fetch("SELECT type, last_error FROM outbox WHERE stream = 'webhook:held'")
        )
        assert why == {"a": "no receiver", "b": "no receiver"}
        assert times["webhook:retried", "b"] == times["webhook:retried", "a"]
        assert await outbox.held(pool, "webhook") == 2
        due = await outbox.due(pool, 10, ["webhook"])
        assert [(r["stream"], r["type"]) for r in due] == [("webhook:free", "b")]
    finally:
        await journal.stop()


# Rows of the outbox this backend has read, by any scan, and not yet reported.
_ROWS_READ = (
    "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'outbox'"
)


async def test_plans_made_on_a_new_outbox_do_not_walk_a_full_one(
    pool: asyncpg.Pool, database: str
) -> None:
    """A server prepares its statements on a new table, and Postgres may reuse
    a generic plan made then until the table is first analyzed: one was seen
    to walk every pending row on each poll under load. The worker's
    statements are planned each run, whatever the connection would do."""
    one = await create_pool(database, min_size=1, max_size=1)
    poller = outbox.Poller(one)
    try:
        async with one.acquire() as conn:
            # The worst a pooled connection may hold: generic plans, made on a
            # new table (a few rows, never analyzed), where the plan walks the
            # pending rows by the index of their times.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await _put(pool, [(f"p{s}.{k}", f"pre{s}", -1.0) for s in range(10) for k in range(3)])
            for s in range(10):
                await outbox.hold(pool, f"p{s}.0", "no receiver")
            for _ in range(6):
                await outbox.due(conn, 200, ["webhook"])
                await outbox.reschedule(conn, "x", 1, "e", 1.0)
                await outbox.hold(conn, "x", "e")
        await _put(pool, [(f"w{s}.{k}", f"wait{s}", -1.0) for s in range(2000) for k in range(3)])
        for s in range(2000):
            await outbox.hold(pool, f"w{s}.0", "no receiver")
        await _put(pool, [("a", "A", -1.0), ("b1", "B", 60.0), ("b2", "B", -1.0)])
        await _put(pool, [("c1", "C", -1.0), ("c2", "C", -1.0), ("d1", "D", -1.0)])
        await poller.due(200, ["webhook"])  # takes that connection
        conn = poller._conn
        assert conn is not None
        read: dict[str, int] = {}
        for name, call in (
            ("poll", lambda: poller.due(200, ["webhook"])),
            ("retry", lambda: outbox.reschedule(conn, "c1", 1, "503", 60.0)),
            ("hold", lambda: outbox.hold(conn, "d1", "no receiver")),
        ):
            async with conn.transaction():
                before = await conn.fetchval(_ROWS_READ)
                await call()
                read[name] = await conn.fetchval(_ROWS_READ) - before
        # A walk of the pending outbox reads 6,000 rows and more.
        assert max(read.values()) < 100, read
        # b2, found behind b1, waits as long; c2 waits with c1, d1 is held.
        assert [r["id"] for r in await poller.due(200, ["webhook"])] == ["a"]
    finally:
        await poller.close()
        await one.close()


async def test_the_workers_poller_plans_each_time_and_gives_back_a_clean_connection(
    pool: asyncpg.Pool, database: str
) -> None:
    await _put(pool, [("a", "A", -1.0), ("a2", "A", -1.0), ("b", "B", -2.0)])
    one = await create_pool(database, min_size=1, max_size=1)
    poller = outbox.Poller(one)
    try:
        assert [r["id"] for r in await poller.due(10, ["webhook"])] == ["b", "a"]
        with pytest.raises(TimeoutError):  # its one connection is held
            await one.acquire(timeout=0.5)
        await poller.close()
        async with one.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
            await conn.execute("SET plan_cache_mode = force_custom_plan")
            shown = await conn.fetchval("SHOW plan_cache_mode")
            await conn.execute("RESET plan_cache_mode")
        assert shown == "force_custom_plan"  # the setting the poller had made
    finally:
        await poller.close()
        await one.close()

"""The journal against a real Postgres: group commit, the (actor_id, seq)
fence, isolation of a bad append, hash chain, unavailability."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from core.clock import now_iso
from persistence.journal import (
    GENESIS_HASH,
    Append,
    IdempotencyRecord,
    Journal,
    Loaded,
    StaleActivation,
    StoredEvent,
    Unavailable,
)
from persistence.migrate import apply_migrations
from persistence.pool import create_pool


def _event(actor: str, seq: int, prev: str, **data: Any) -> StoredEvent:
    return StoredEvent.make(actor, seq, "test.event", {"n": seq, **data}, now_iso(), prev)


def _alone(e: StoredEvent) -> Append:
    """An append of one event to its own actor."""
    return Append(e.actor_id, [e])


async def _beside(journal: Journal, first: Append, others: list[StoredEvent]) -> list[Any]:
    """`first` and each of `others` (alone) appended at once: each outcome,
    None or the exception, in that order."""
    return await asyncio.gather(
        journal.append(first),
        *(journal.append(_alone(e)) for e in others),
        return_exceptions=True,
    )


async def test_concurrent_appends_are_group_committed(journal: Journal) -> None:
    events = [_event(f"a:{i}", 1, GENESIS_HASH) for i in range(300)]
    await asyncio.gather(*(journal.append(_alone(e)) for e in events))
    assert journal.stats.appends == 300
    assert journal.stats.batches < 300 and journal.stats.max_batch > 1
    back = await journal.read("a:7")
    assert back == [events[7]]


async def test_stale_activation_is_fenced_and_isolated(journal: Journal) -> None:
    first = _event("s:1", 1, GENESIS_HASH)
    await journal.append(Append("s:1", [first]))
    stale = _event("s:1", 1, GENESIS_HASH, other=True)  # a second activation at seq 1
    bystanders = [_event(f"b:{i}", 1, GENESIS_HASH) for i in range(20)]
    results = await _beside(journal, Append("s:1", [stale]), bystanders)
    assert isinstance(results[0], StaleActivation)
    assert results[1:] == [None] * 20
    assert await journal.read("s:1") == [first]


@pytest.mark.expects_server_errors("Postgres refuses a NUL in the append: the writer logs it")
async def test_a_refused_value_fails_only_its_own_append(journal: Journal) -> None:
    bad = StoredEvent.make(
        "x:1", 1, "test.event", {"t": "nul \u0000 inside"}, now_iso(), GENESIS_HASH
    )
    good = [_event(f"g:{i}", 1, GENESIS_HASH) for i in range(10)]
    results = await _beside(journal, Append("x:1", [bad]), good)
    assert isinstance(results[0], Unavailable)
    assert results[1:] == [None] * 10


async def test_hash_chain_round_trips(journal: Journal) -> None:
    prev = GENESIS_HASH
    chain: list[StoredEvent] = []
    for seq in range(1, 6):
        e = _event("h:1", seq, prev, text="ünïcødé", f=0.1, big=2**62)
        chain.append(e)
        prev = e.hash
    await journal.append(Append("h:1", chain))
    back = await journal.read("h:1")
    for e in back:
        again = StoredEvent.make(e.actor_id, e.seq, e.name, e.data, e.at, e.prev_hash)
        assert again.hash == e.hash
    assert back == chain


async def test_unavailable_database_changes_nothing(database: str) -> None:
    pool = await create_pool(database)
    async with pool.acquire() as conn:
        await apply_migrations(conn)
    j = Journal(pool)
    await j.start()
    await pool.close()
    with pytest.raises(Unavailable):
        await j.append(Append("u:1", [_event("u:1", 1, GENESIS_HASH)]))
    await j.stop()
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM journal") == 0
    finally:
        await conn.close()


async def test_projection_rows_of_a_batch_commit_with_it_last_row_per_key_winning(
    journal: Journal,
) -> None:
    """Projection rows travel in the batch's one statement; within a batch the
    last row of a key wins, and a batch refused for one append keeps none of
    that append's rows."""
    from datetime import UTC, datetime

    from persistence.projections import SESSIONS, Projection

    now = datetime.now(UTC)

    def row(sid: str, state: str, seq: int) -> Projection:
        return Projection(SESSIONS, (sid, state, "c1", None, seq, {"state": state}, {}, now, now))

    first = _event("p:1", 1, GENESIS_HASH)
    second = _event("p:1", 2, first.hash)
    await asyncio.gather(
        journal.append(Append("p:1", [first], projections=[row("s-1", "REQUESTED", 1)])),
        journal.append(
            Append(
                "p:2", [_event("p:2", 1, GENESIS_HASH)], projections=[row("s-2", "REQUESTED", 1)]
            )
        ),
    )
    # Two rows for one key in a single append: the later one is kept.
    await journal.append(
        Append(
            "p:1",
            [second],
            projections=[row("s-1", "ENP_ASSIGNED", 2), row("s-1", "VIDEO_IN_PROGRESS", 2)],
        )
    )
    # A refused append (seq 2 again) leaves its projection row out.
    with pytest.raises(StaleActivation):
        await journal.append(Append("p:1", [second], projections=[row("s-1", "CANCELLED", 3)]))
    rows = await journal.pool.fetch("SELECT session_id, state, seq FROM sessions ORDER BY 1")
    assert [tuple(r) for r in rows] == [
        ("s-1", "VIDEO_IN_PROGRESS", 2),
        ("s-2", "REQUESTED", 1),
    ]


async def test_offer_rows_travel_in_the_batch_first_resolution_winning(journal: Journal) -> None:
    """An offer opened, then resolved by two commits of one batch (the
    session's accept and the notary's expiry, say): the first in the batch
    wins, as when each was a statement of its own; a second open of the same
    id is refused like a stale activation; the live average is upserted."""
    from datetime import UTC, datetime, timedelta

    from persistence import directory, offers

    later = datetime.now(UTC) + timedelta(minutes=1)
    opened = _event("n:1", 1, GENESIS_HASH)
    await journal.append(
        Append("n:1", [opened], projections=[offers.opened("o-1", "s-1", "n1", later)])
    )
    accepted, expired = _event("s:1", 1, GENESIS_HASH), _event("n:1", 2, opened.hash)
    await asyncio.gather(
        journal.append(Append("s:1", [accepted], projections=[offers.resolved("o-1", "accepted")])),
        journal.append(
            Append(
                "n:1",
                [expired],
                projections=[offers.resolved("o-1", "expired"), directory.live_avg("n1", 2.5)],
            )
        ),
    )
    assert journal.stats.max_batch == 2, "the two commits were meant to share a batch"
    row = await journal.pool.fetchrow("SELECT state, resolved_at, expires_at FROM offers")
    assert row is not None and row["state"] == "accepted" and row["resolved_at"] is not None
    assert row["expires_at"] == later
    with pytest.raises(StaleActivation):
        await journal.append(
            Append(
                "n:1",
                [_event("n:1", 3, expired.hash)],
                projections=[offers.opened("o-1", "s-2", "n1", later)],
            )
        )
    await journal.append(
        Append("n:2", [_event("n:2", 1, GENESIS_HASH)], projections=[directory.live_avg("n1", 4.0)])
    )
    avg = await journal.pool.fetchrow("SELECT profile, live_avg_response_s FROM notaries")
    assert avg is not None and tuple(avg) == ({}, 4.0)


async def test_an_actor_loads_its_snapshot_the_events_after_it_and_its_replies(
    journal: Journal,
) -> None:
    """`load`, an activation's one read: the latest snapshot, only the events
    after it and in order, and every reply kept for retries."""
    assert (await journal.load("l:1")) == Loaded()
    prev, events = GENESIS_HASH, []
    for seq in range(1, 6):
        events.append(_event("l:1", seq, prev))
        prev = events[-1].hash
    reply = IdempotencyRecord("u1", "r1", "f" * 32, {"data": {"ok": 1}, "follow": {}})
    await journal.append(Append("l:1", events[:2], idempotency=[reply]))
    await journal.append(Append("l:1", events[2:3], snapshot=(3, {"state": {"n": 3}})))
    await journal.append(Append("l:1", events[3:]))
    await journal.append(Append("l:2", [_event("l:2", 1, GENESIS_HASH)]))
    loaded = await journal.load("l:1")
    assert loaded.snapshot == (3, {"state": {"n": 3}})
    assert loaded.events == events[3:]
    assert loaded.idempotency == [reply]


async def test_rows_for_a_destination_without_a_sender_are_written_held(journal: Journal) -> None:
    """Told which destinations have no sender here, the journal writes their
    outbox rows held ('infinity', with the reason), as the delivery worker
    would on its first poll; other destinations' rows are due at once."""
    from persistence.outbox import sms_message, webhook_event

    journal.held = {"webhook": "ENF_WEBHOOK_URL is not set"}
    woken: list[int] = []
    journal.on_outbox = lambda: woken.append(1)
    held = webhook_event("s-1", 1, "session.requested", {}, now_iso())
    first = _event("h:1", 1, GENESIS_HASH)
    await journal.append(Append("h:1", [first], projections=[held]))
    assert woken == [], "a row written held woke the delivery worker"
    due = sms_message("s-1", "s-1", 1, "sealed-to", "hello", 0)
    await journal.append(Append("h:1", [_event("h:1", 2, first.hash)], projections=[due]))
    assert woken == [1]
    got = await journal.pool.fetch(
        "SELECT destination, attempts, last_error, next_attempt_at = 'infinity' AS held,"
        " next_attempt_at <= now() AS due FROM outbox ORDER BY destination"
    )
    assert [tuple(r) for r in got] == [
        ("sms", 0, None, False, True),
        ("webhook", 0, "ENF_WEBHOOK_URL is not set", True, False),
    ]


async def test_values_past_64_bits_and_every_other_shape_round_trip(journal: Journal) -> None:
    """A batch travels as JSON text (orjson; `json` for integers orjson does
    not take): what comes back, and its hash, are what went in."""
    odd = {
        "huge": 10**30,
        "neg": -(2**63),
        "floats": [0.1, 1e-7, 2.5, 1e300],
        "text": 'ünïcødé \u2028 \U0001f642 "quoted" \\ back',
        "nested": {"k": [None, True, False, {"é": ""}]},
    }
    plain = _event("o:2", 1, GENESIS_HASH, text="plain")
    big = StoredEvent.make("o:1", 1, "test.event", odd, now_iso(), GENESIS_HASH)
    results = await _beside(journal, Append("o:1", [big]), [plain])
    assert results == [None, None]
    (back,) = await journal.read("o:1")
    assert back == big and back.data["huge"] == 10**30
    again = StoredEvent.make(back.actor_id, back.seq, back.name, back.data, back.at, GENESIS_HASH)
    assert again.hash == big.hash
    assert await journal.read("o:2") == [plain]

"""The notarial book's numbers and what an entry says of the act (issue 14,
"At the seal"): a number is reserved for a session before its envelope is
signed (the envelope carries it), a session keeps its number however often it
asks, a notary's numbers follow one another with none skipped or given twice,
incomplete-act entries (numbered in their own statement) take the next number
after the reservations, and the entry holds the principal's signature
reference and the seal's time."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from persistence.book import (
    book_entry,
    export_entry,
    numbered_book_entry,
    reserve_entry_no,
    to_csv,
)
from persistence.journal import Append, Journal, Refused
from persistence.keys import Keys
from persistence.legal_record import book_entries

SIGNATURE = "c2lnbmF0dXLDqQ=="  # as the principal's app sent it
SIGNED_AT = "2026-03-04T05:06:07.123Z"
SEALED_AT = "2026-03-04T05:07:08.456Z"
ACT_AT = "2026-03-04T05:09:10.789Z"
MONTH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def state(enp_id: str = "n1", *, signed: bool = True, sealed: bool = True) -> dict[str, Any]:
    """A session's state as the book reads it (what the fold keeps)."""
    return {
        "customer_id": "c1",
        "enp_id": enp_id,
        "enp_name": "Atty. Cruz",
        "enp_license": "ENP-1",
        "amount": 500.0,
        "request": {"principal": None, "kyc_session_id": "kyc-1", "face_match_score": 0.9},
        "document": {"type": "affidavit", "title": "Affidavit", "sha256": "ab" * 32},
        "checks": {"comprehension_confirmed": True, "duress_check_passed": True},
        "recording": None,
        "participants": {
            "c1": {"role": "customer", "location": {"country": "PH"}},
            enp_id: {"role": "enp", "location": {"country": "PH"}},
        },
        "signed": {"user_id": "c1", "signature": SIGNATURE, "at": SIGNED_AT} if signed else None,
        "sealed": (
            {"user_id": enp_id, "signature": "ZQ==", "seal": "cw==", "at": SEALED_AT}
            if sealed
            else None
        ),
    }


async def write_entry(
    pool: asyncpg.Pool,
    session_id: str,
    *,
    complete: bool,
    entry_no: int | None = None,
    enp_id: str = "n1",
) -> None:
    """The entry as the session actor writes it (complete: with its reserved number)."""
    s = state(enp_id, signed=complete, sealed=complete)
    reason = None if complete else "customer unavailable"
    if entry_no is None:
        assert not complete and reason is not None  # only an incomplete act has none
        sql, args = book_entry(s, session_id, at=ACT_AT, reason=reason)
        await pool.execute(sql, *args)
        return
    # Numbered beforehand: a row of the journal's batch, as the actor commits it.
    assert complete
    row = numbered_book_entry(s, session_id, at=ACT_AT, entry_no=entry_no)
    journal = Journal(pool, writers=1)
    await journal.start()
    try:
        await journal.append(Append(f"session:{session_id}", projections=[row]))
    finally:
        await journal.stop()


async def numbers(pool: asyncpg.Pool, notary_id: str) -> list[tuple[int, str]]:
    """(entry_no, session_id) of the notary's book, in entry order."""
    rows = await book_entries(pool, notary_id, *MONTH)
    return [(r["entry_no"], r["session_id"]) for r in rows]


async def test_a_session_keeps_its_number_and_a_notarys_numbers_follow(
    pool: asyncpg.Pool,
) -> None:
    first = await reserve_entry_no(pool, "n1", "s1")
    again = await reserve_entry_no(pool, "n1", "s1")  # finalisation run again
    second = await reserve_entry_no(pool, "n1", "s2")
    elsewhere = await reserve_entry_no(pool, "n2", "s3")  # another notary's book
    assert (first, again, second, elsewhere) == (1, 1, 2, 1)
    assert await reserve_entry_no(pool, "n1", "s1") == 1


async def test_concurrent_reservations_give_every_number_once(pool: asyncpg.Pool) -> None:
    sessions = [f"s{i}" for i in range(12)]
    # Each session asks twice at once (a retried finalisation racing the first).
    got = await asyncio.gather(*(reserve_entry_no(pool, "n1", s) for s in sessions * 2))
    by_session = dict(zip(sessions * 2, got, strict=True))
    assert got[: len(sessions)] == got[len(sessions) :]
    assert sorted(by_session.values()) == list(range(1, len(sessions) + 1))


async def test_an_incomplete_act_takes_the_next_number_after_a_reservation(
    pool: asyncpg.Pool, keys: Keys
) -> None:
    reserved = await reserve_entry_no(pool, "n1", "s1")  # finalisation of s1 began
    await write_entry(pool, "s2", complete=False)  # s2 cancelled meanwhile
    await write_entry(pool, "s1", complete=True, entry_no=reserved)
    # An incomplete act of a session that already holds a number keeps it.
    held = await reserve_entry_no(pool, "n1", "s3")
    await write_entry(pool, "s3", complete=False)
    await write_entry(pool, "s4", complete=False, enp_id="n2")
    assert await numbers(pool, "n1") == [(1, "s1"), (2, "s2"), (3, "s3")]
    assert held == 3 and await numbers(pool, "n2") == [(1, "s4")]
    assert await reserve_entry_no(pool, "n1", "s5") == 4  # nothing skipped, nothing twice


async def test_an_entry_bears_only_its_sessions_reserved_number(
    pool: asyncpg.Pool, keys: Keys
) -> None:
    await reserve_entry_no(pool, "n1", "s1")
    await reserve_entry_no(pool, "n1", "s2")
    # The reservations' foreign key refuses the row, and the journal the commit.
    with pytest.raises(Refused):
        await write_entry(pool, "s1", complete=True, entry_no=2)  # s2's number
    with pytest.raises(Refused):
        await write_entry(pool, "s9", complete=True, entry_no=3)  # never reserved
    assert await numbers(pool, "n1") == []
    await write_entry(pool, "s1", complete=True, entry_no=1)
    with pytest.raises(asyncpg.UniqueViolationError):  # one entry per session
        await write_entry(pool, "s1", complete=False)
    assert await numbers(pool, "n1") == [(1, "s1")]


async def test_two_entries_of_one_notary_in_one_batch_are_both_written(
    pool: asyncpg.Pool,
) -> None:
    """A batch keeps one row per key: an entry's key is its session, not its
    notary, so two acts of one notary committed together are both in the book."""
    rows = [
        numbered_book_entry(
            state(), sid, at=ACT_AT, entry_no=await reserve_entry_no(pool, "n1", sid)
        )
        for sid in ("s1", "s2")
    ]
    journal = Journal(pool, writers=1)
    await journal.start()
    try:
        await asyncio.gather(
            *(journal.append(Append(f"session:s{i}", projections=[r])) for i, r in enumerate(rows))
        )
    finally:
        await journal.stop()
    assert journal.stats.max_batch == 2, "the two were meant to share a batch"
    assert await numbers(pool, "n1") == [(1, "s1"), (2, "s2")]


async def test_the_entry_holds_the_signature_reference_and_the_seal_time(
    pool: asyncpg.Pool, keys: Keys
) -> None:
    entry_no = await reserve_entry_no(pool, "n1", "s1")
    await write_entry(pool, "s1", complete=True, entry_no=entry_no)
    await write_entry(pool, "s2", complete=False)
    complete, incomplete = [
        export_entry(r, keys.pii) for r in await book_entries(pool, "n1", *MONTH)
    ]
    digest = hashlib.sha256(SIGNATURE.encode()).hexdigest()
    assert complete["entry_no"] == 1 and complete["complete"] is True
    assert complete["signature_sha256"] == digest
    assert complete["signed_at"] == SIGNED_AT and complete["sealed_at"] == SEALED_AT
    assert incomplete["entry_no"] == 2
    assert incomplete["signature_sha256"] is incomplete["sealed_at"] is None
    rows = list(csv.DictReader(io.StringIO(to_csv([complete, incomplete], "n1", "2026-03"))))
    assert rows[0]["signature_sha256"] == digest
    assert (rows[0]["signed_at"], rows[0]["sealed_at"]) == (SIGNED_AT, SEALED_AT)
    assert rows[1]["signature_sha256"] == rows[1]["signed_at"] == rows[1]["sealed_at"] == ""

"""The journal's hash chain without a database (ARCHITECTURE.md, Durability):
each row's hash covers the row and the previous hash, so any change to any
field, or a row out of its place, shows. The chain against Postgres:
tests/functional/test_journal.py."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from persistence.journal import GENESIS_HASH, StoredEvent, chain_hash

AT = "2026-11-24T08:00:00.000000Z"


def chain(actor: str, n: int) -> list[StoredEvent]:
    prev = GENESIS_HASH
    out: list[StoredEvent] = []
    for seq in range(1, n + 1):
        e = StoredEvent.make(actor, seq, "test.event", {"n": seq, "t": "ünï"}, AT, prev)
        out.append(e)
        prev = e.hash
    return out


def test_each_row_links_to_the_one_before() -> None:
    events = chain("h:1", 5)
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert len({e.hash for e in events}) == 5
    assert all(len(e.hash) == 64 and int(e.hash, 16) >= 0 for e in events)


def test_the_hash_is_the_rows_and_only_the_rows() -> None:
    e = chain("h:1", 1)[0]
    assert e.hash == chain_hash(e.prev_hash, e.actor_id, e.seq, e.name, e.data, e.at)
    assert chain("h:1", 3) == chain("h:1", 3)  # deterministic
    # The order of keys in the data does not count (canonical JSON).
    a = StoredEvent.make("h:1", 1, "x", {"a": 1, "b": [1, 2]}, AT, GENESIS_HASH)
    b = StoredEvent.make("h:1", 1, "x", {"b": [1, 2], "a": 1}, AT, GENESIS_HASH)
    assert a.hash == b.hash


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor_id", "h:2"),
        ("seq", 2),
        ("name", "test.other"),
        ("data", {"n": 1, "t": "uni"}),
        ("at", "2026-11-24T08:00:00.000001Z"),
        ("prev_hash", "f" * 64),
    ],
)
def test_any_changed_field_changes_the_hash(field: str, value: Any) -> None:
    e = chain("h:1", 1)[0]
    changed = dataclasses.replace(e, **{field: value})
    again = chain_hash(
        changed.prev_hash, changed.actor_id, changed.seq, changed.name, changed.data, changed.at
    )
    assert again != e.hash

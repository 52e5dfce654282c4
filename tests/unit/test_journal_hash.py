"""The journal's hash chain without a database (ARCHITECTURE.md, Durability):
each row's hash covers the row and the previous hash, so any change to any
field, or a row out of its place, shows. The chain against Postgres:
tests/functional/test_journal.py."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistence.journal import GENESIS_HASH, StoredEvent, canonical_json, chain_hash

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


# -- the canonical text: stored hashes cover `json`'s, byte for byte ---------------------------


def reference_canonical(value: Any) -> str:
    """What every stored hash covers: the standard library's canonical JSON."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-05, 1.5e-7, 9.999999999999999e-05, 1e16, 1.2e300, -0.0, 2**63, 2**64 - 1])
    | st.text()
    | st.sampled_from(["\x00", "\x1f\x7f", "\u2028\u2029", "é\U0001f600", '"\\/', Level.HIGH])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=3000, deadline=None)
@given(_values)
def test_canonical_json_is_the_standard_librarys_text(value: Any) -> None:
    """The fast path (orjson, for what it writes as `json` does) and the
    fallback together write exactly what the hashes already stored cover."""
    assert canonical_json(value) == reference_canonical(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": "\ud800"},  # a lone surrogate: json writes it, the hash's encode() refuses it
        {"big": 2**64},  # past orjson's integers
        {1: "int key"},  # json makes the key a string
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    ],
)
def test_canonical_json_falls_back_where_orjson_differs(value: Any) -> None:
    assert canonical_json(value) == reference_canonical(value)


@pytest.mark.parametrize(
    "value",
    [
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"when": datetime.datetime(2026, 1, 1)},
        {"id": uuid.UUID(int=1)},
        {"colour": Colour.RED},
    ],
)
def test_canonical_json_refuses_what_json_refuses(value: Any) -> None:
    """orjson would write these (NaN as null, a datetime as text); the hash
    refuses them as before."""
    with pytest.raises((ValueError, TypeError)):
        reference_canonical(value)
    with pytest.raises((ValueError, TypeError)):
        canonical_json(value)

"""The session's commit copies its state with `copy_for_fold`, which shares
every value the fold only replaces: applying any event, in any order, to the
copy must leave the original exactly as it was (a failed commit keeps it),
and must give what a deep copy would."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import lifecycle as L
from actors.eventsourced import copy_state
from actors.session.fold import _ENTERED, _FOLD, apply, copy_for_fold
from actors.session.state import SessionState, initial_state
from persistence.journal import GENESIS_HASH, StoredEvent

AT = "2026-12-03T12:00:00.000000Z"
REQUEST = {
    "customer_id": "c1",
    "document": {"id": "d", "sha256": "ab" * 32, "type": "affidavit", "title": "t"},
    "principal": None,
    "price_preference": None,
    "location": None,
    "preferred_notary_id": None,
    "idempotency_key": "k",
    "kyc_session_id": None,
    "face_match_score": None,
    "expires_at": AT,
}
ASSIGNED = {"enp_id": "n1", "amount": 500.0, "platform_fee": 50.0, "enp_fee": 450.0}


def _events() -> list[tuple[str, dict[str, Any]]]:
    """An event of each kind the fold knows, and a move into each state it records."""
    moves: list[tuple[str, dict[str, Any]]] = [
        ("session.state", {"state": L.REQUESTED, "request": REQUEST}),
        ("session.state", {"state": L.ENP_ASSIGNED, **ASSIGNED}),
        ("session.state", {"state": L.VIDEO_IN_PROGRESS, "room": "r"}),
        ("session.state", {"state": L.VIDEO_COMPLETED}),
        ("session.state", {"state": L.NOTARIZED}),
        ("session.state", {"state": L.DISTRIBUTING, "recipients": [{"channel": "sms"}]}),
        ("session.state", {"state": L.CANCELLED, "reason": "r"}),
        ("session.state", {"state": L.FAILED, "reason": "r"}),
    ]
    others: list[tuple[str, dict[str, Any]]] = [
        ("participant.joined", {"user_id": "c1", "consent": {"recording": True}}),
        ("participant.joined", {"user_id": "n1", "location": {"lat": 1.5, "lng": 2.5}}),
        ("participant.left", {"user_id": "c1"}),
        ("participant.left", {"user_id": "n1"}),
        ("checks.recorded", {"comprehension_confirmed": True, "duress_check_passed": True}),
        ("act.signed", {"user_id": "c1", "signature": "s"}),
        ("act.sealed", {"user_id": "n1", "signature": "s", "seal": "x"}),
        ("delivery.status", {"recipient": 0, "status": "delivered"}),
        ("delivery.status", {"recipient": 1, "status": "failed"}),
        ("recording.started", {"user_id": "c1"}),
        ("recording.started", {"user_id": "n1"}),
        ("session.paused", {"reason": "party_left", "user_id": "c1"}),
        ("session.resumed", {}),
        ("recording.ready", {"url": "u", "sha256": "h", "bytes": 1, "duration_s": 1.0}),
        ("recording.failed", {"user_id": "c1"}),
        ("recording.failed", {"reason": "worker_died"}),
        ("session.notarized", {"envelope_id": "e"}),
    ]
    return moves + others


EVENTS = _events()


def test_the_events_cover_the_whole_fold() -> None:
    """A fold function added without an event here would go unchecked."""
    assert {name for name, _ in EVENTS} == set(_FOLD)
    entered = {d["state"] for name, d in EVENTS if name == "session.state"}
    assert set(_ENTERED) <= entered


def _started() -> SessionState:
    """A session with both parties in it (the events name them)."""
    s = initial_state()
    for i, (name, data) in enumerate(EVENTS[:2]):
        apply(s, StoredEvent.make("session:x", i + 1, name, data, AT, GENESIS_HASH))
    return s


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(range(len(EVENTS))), min_size=1, max_size=30))
def test_applying_to_the_copy_leaves_the_original_as_it_was(order: list[int]) -> None:
    s = _started()
    for seq, i in enumerate(order, start=3):
        name, data = EVENTS[i]
        event = StoredEvent.make("session:x", seq, name, data, AT, GENESIS_HASH)
        before = msgpack.packb(s)
        deep = copy_state(s)
        apply(deep, event)
        new = copy_for_fold(s)
        apply(new, event)
        assert msgpack.packb(s) == before, f"{name} changed the state it was not applied to"
        assert new == deep
        s = new

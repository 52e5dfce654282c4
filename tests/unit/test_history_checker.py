"""The chaos suite's history checker (tests/chaos/checker.py) on synthetic
histories: a clean one passes, and each property fails the history that
breaks it — so the checker provably can fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors import lifecycle as L
from core.clock import iso
from core.ids import session_id_for
from persistence.journal import GENESIS_HASH, StoredEvent
from tests.chaos.checker import (
    Journal,
    Row,
    SessionRow,
    Violation,
    broken_chains,
    check,
    late_offers,
)
from tests.chaos.history import Direction, Record

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
S, S2 = session_id_for("c1", "k"), "s-2"


def rules(violations: list[Violation]) -> list[str]:
    return [v.rule for v in violations]


class World:
    """A recorded history and its journal, built step by step."""

    def __init__(self) -> None:
        self.history: list[Record] = []
        self.rows: list[Row] = []
        self.heads: dict[str, tuple[int, str]] = {}
        self.sessions: dict[str, SessionRow] = {}

    def frame(self, user: str, conn: int, direction: Direction, frame: dict[str, Any]) -> None:
        self.history.append(Record(len(self.history) * 0.01, user, conn, direction, frame))

    def call(
        self,
        user: str,
        conn: int,
        rid: str,
        type_: str,
        body: dict[str, Any],
        reply: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """A request and its reply: ok with `reply`, or the `error` code."""
        self.frame(user, conn, "sent", {"id": rid, "type": type_, "data": body})
        if error is not None:
            answer = {"re": rid, "ok": False, "error": {"code": error, "message": "x"}}
        else:
            answer = {"re": rid, "ok": True, "data": reply or {}}
        self.frame(user, conn, "received", answer)

    def journal(self, actor: str, name: str, data: dict[str, Any], ms: int) -> StoredEvent:
        seq, head = self.heads.get(actor, (0, GENESIS_HASH))
        e = StoredEvent.make(actor, seq + 1, name, data, iso(T0 + timedelta(milliseconds=ms)), head)
        self.heads[actor] = (e.seq, e.hash)
        self.rows.append(
            Row(
                e.actor_id,
                e.seq,
                e.name,
                e.data,
                T0 + timedelta(milliseconds=ms),
                e.prev_hash,
                e.hash,
            )
        )
        return e

    def state(self, sid: str, state: str, prev: str | None, ms: int, **data: Any) -> StoredEvent:
        e = self.journal(
            f"session:{sid}", "session.state", {"state": state, "prev": prev, **data}, ms
        )
        enp = data.get("enp_id") or (self.sessions[sid].enp_id if sid in self.sessions else None)
        self.sessions[sid] = SessionRow(sid, state, enp, e.seq)
        return e

    def deliver(self, user: str, conn: int, e: StoredEvent) -> None:
        self.frame(user, conn, "received", e.wire())

    def offer(self, notary: str, conn: int, oid: str, sid: str, ms: int) -> None:
        e = self.journal(f"notary:{notary}", "offer", {"offer_id": oid, "session_id": sid}, ms)
        self.deliver(notary, conn, e)

    def result(self) -> Journal:
        return Journal(list(self.rows), list(self.sessions.values()))


def clean() -> World:
    """c1 (connection 1) requests S; n1 (connection 2) is offered it and accepts."""
    w = World()
    w.call("c1", 1, "r1", "session.request", {"idempotency_key": "k"}, {"session_id": S})
    w.deliver("c1", 1, w.state(S, L.REQUESTED, None, 0))
    w.offer("n1", 2, "o1", S, 10)
    w.call("n1", 2, "a1", "offer.accept", {"offer_id": "o1"}, {"session_id": S})
    assigned = w.state(S, L.ENP_ASSIGNED, L.REQUESTED, 20, enp_id="n1", offer_id="o1")
    w.deliver("c1", 1, assigned)
    w.deliver("n1", 2, assigned)
    return w


def test_a_clean_history_passes() -> None:
    w = clean()
    assert check(w.history, w.result()) == []
    assert broken_chains(w.result()) == []


def test_an_offer_after_the_assignment_is_reported() -> None:
    w = clean()
    w.offer("n2", 3, "o2", S, 25)  # the storm of issue 19: offered once assigned
    found = check(w.history, w.result())
    assert rules(found) == ["offer-after-close"]
    assert f"n2 offered session {S} (offer o2)" in found[0].detail


def test_an_offer_seen_only_by_a_client_counts_too() -> None:
    w = clean()
    late = StoredEvent.make(
        "notary:n2",
        1,
        "offer",
        {"offer_id": "o3", "session_id": S},
        iso(T0 + timedelta(seconds=1)),
        GENESIS_HASH,
    )
    w.deliver("n2", 3, late)
    assert rules(late_offers(w.history, w.result())) == ["offer-after-close"]


def test_an_offer_after_a_terminal_state_is_reported() -> None:
    w = World()
    w.state(S2, L.REQUESTED, None, 0)
    w.state(S2, L.CANCELLED, L.REQUESTED, 5, reason="changed")
    w.offer("n1", 1, "o9", S2, 6)
    assert rules(check(w.history, w.result())) == ["offer-after-close"]


@pytest.mark.parametrize(
    ("ms", "offer_id", "late"), [(20, "o1", False), (20, "o2", True), (19, "o2", False)]
)
def test_the_same_millisecond_as_the_assignment(ms: int, offer_id: str, late: bool) -> None:
    """Only the accepted offer may carry the assignment's own millisecond."""
    w = clean()
    w.rows = [r for r in w.rows if r.actor_id != "notary:n1"]
    w.journal("notary:n1", "offer", {"offer_id": offer_id, "session_id": S}, ms)
    w.history = [r for r in w.history if r.frame.get("name") != "offer"]
    assert bool(late_offers(w.history, w.result())) is late


def test_a_session_assigned_twice_is_reported() -> None:
    w = clean()
    w.state(S, L.ENP_ASSIGNED, L.ENP_ASSIGNED, 30, enp_id="n2", offer_id="o2")
    found = rules(check(w.history, w.result()))
    assert "assigned-twice" in found and "bad-transition" in found


def test_a_notary_with_two_active_sessions_is_reported() -> None:
    w = clean()
    w.state(S2, L.REQUESTED, None, 21)
    w.state(S2, L.ENP_ASSIGNED, L.REQUESTED, 40, enp_id="n1", offer_id="o5")
    assert rules(check(w.history, w.result())) == ["two-active-sessions"]
    # Once the first is released (NOTARIZED), the second may start.
    w = clean()
    for state, prev, ms in [
        (L.VIDEO_IN_PROGRESS, L.ENP_ASSIGNED, 21),
        (L.VIDEO_COMPLETED, L.VIDEO_IN_PROGRESS, 22),
        (L.NOTARIZING, L.VIDEO_COMPLETED, 23),
        (L.NOTARIZED, L.NOTARIZING, 24),
    ]:
        w.state(S, state, prev, ms)
    w.state(S2, L.REQUESTED, None, 21)
    w.state(S2, L.ENP_ASSIGNED, L.REQUESTED, 24, enp_id="n1", offer_id="o5")
    assert check(w.history, w.result()) == []


def test_gaps_and_duplicates_in_a_connection_stream_are_reported() -> None:
    w = clean()
    requested = w.rows[0]
    dup = StoredEvent(
        requested.actor_id,
        1,
        requested.name,
        requested.data,
        iso(requested.at),
        requested.prev_hash,
        requested.hash,
    )
    w.deliver("c1", 1, dup)
    assert rules(check(w.history, w.result())) == ["duplicate-event"]
    w = clean()
    w.frame(
        "c1",
        1,
        "received",
        {
            "type": "event",
            "topic": f"session:{S}",
            "seq": 4,
            "name": "x",
            "data": {},
            "at": iso(T0),
        },
    )
    assert rules(check(w.history, w.result())) == ["event-gap"]
    # A new connection starts where its re-join put it; ephemeral events have no seq.
    w = clean()
    w.frame(
        "c1",
        5,
        "received",
        {
            "type": "event",
            "topic": f"session:{S}",
            "seq": 2,
            "name": "x",
            "data": {},
            "at": iso(T0),
        },
    )
    w.frame(
        "c1",
        5,
        "received",
        {"type": "event", "topic": "presence", "name": "notary.presence", "data": {}},
    )
    assert check(w.history, w.result()) == []


def unavailable_accept() -> World:
    """The clean world, but n1's accept was answered `unavailable`."""
    w = clean()
    for i, r in enumerate(w.history):
        if r.frame.get("re") == "a1":
            bad = {"re": "a1", "ok": False, "error": {"code": "unavailable", "message": "x"}}
            w.history[i] = Record(r.t, r.user, r.conn, r.direction, bad)
    return w


def test_an_accept_answered_unavailable_yet_applied_is_reported() -> None:
    """Issue 19's first defect: the session was assigned, the client heard `unavailable`."""
    w = unavailable_accept()
    assert rules(check(w.history, w.result())) == ["refused-applied"]
    # The retry by id that is then answered ok makes it whole.
    w.call("n1", 2, "a1", "offer.accept", {"offer_id": "o1"}, {"session_id": S})
    assert check(w.history, w.result()) == []


def test_an_accept_refused_on_its_retry_yet_applied_is_reported() -> None:
    """Seen in a chaos run: the assignment committed, its acknowledgement was
    lost; the client heard `unavailable`, and its retry by id `conflict`."""
    w = unavailable_accept()
    w.call("n1", 2, "a1", "offer.accept", {"offer_id": "o1"}, error="conflict")
    found = check(w.history, w.result())
    assert rules(found) == ["refused-applied"]
    assert "['unavailable', 'conflict']" in found[0].detail


def test_an_acknowledged_request_without_its_effect_is_reported() -> None:
    w = clean()
    w.call("c1", 1, "r2", "act.sign", {"session_id": S, "signature": "x"})
    assert rules(check(w.history, w.result())) == ["acked-effect"]
    w.deliver("c1", 1, w.journal(f"session:{S}", "act.signed", {}, 30))
    w.sessions[S] = SessionRow(S, L.ENP_ASSIGNED, "n1", 3)
    assert check(w.history, w.result()) == []
    w.deliver("c1", 1, w.journal(f"session:{S}", "act.signed", {}, 31))  # applied twice
    w.sessions[S] = SessionRow(S, L.ENP_ASSIGNED, "n1", 4)
    assert rules(check(w.history, w.result())) == ["acked-effect"]


def test_a_session_inconsistent_with_its_journal_is_reported() -> None:
    w = clean()
    w.sessions[S] = SessionRow(S, L.REQUESTED, None, 1)
    found = check(w.history, w.result())
    assert rules(found) == ["session-inconsistent"] and "is live" in found[0].detail


def test_a_tampered_journal_row_breaks_its_chain() -> None:
    w = clean()
    r = w.rows[0]
    w.rows[0] = Row(
        r.actor_id, r.seq, r.name, {**r.data, "state": L.COMPLETED}, r.at, r.prev_hash, r.hash
    )
    assert rules(broken_chains(w.result())) == ["broken-chain"]


def test_a_request_answered_unavailable_yet_applied_is_reported() -> None:
    """PROTOCOL §7: `unavailable` means nothing was applied; the session a
    request names is known from its idempotency key even without a reply."""
    w = World()
    w.call("c2", 1, "r1", "session.request", {"idempotency_key": "k2"}, error="unavailable")
    assert check(w.history, w.result()) == []
    w.state(session_id_for("c2", "k2"), L.REQUESTED, None, 0)
    assert rules(check(w.history, w.result())) == ["refused-applied"]

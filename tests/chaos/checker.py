"""The history checker: pure functions over a recorded history
(tests/chaos/history.py) and the journal as read from Postgres
(`load_journal`, the one function here that does I/O). Each property returns
the violations it finds; `check` runs them all.

(a) `late_offers`: no notary is offered a session after that session's
    `ENP_ASSIGNED` or a terminal state in the journal (issue 19).
(b) `double_assignments`: no session is assigned twice, and no notary holds
    two active sessions at once.
(c) `stream_faults`: every connection's event stream is, per topic, gapless
    and free of duplicates (PROTOCOL §3).
(d) `effect_faults`: every acknowledged state-changing request's event is in
    the journal exactly once, and a request only ever answered with errors
    (`unavailable`, then `conflict` on its retry, say) left no effect (§3, §7).
(e) `inconsistent_sessions`: every session moved only along the lifecycle and
    ends terminal or consistent with its journal (`Journal.sessions`: the
    projection, or what the running server says of a live session).

Journal times and event times are the server's clock at millisecond
precision; an offer in the same millisecond as the assignment counts as late
unless it is the offer that was accepted.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from actors import lifecycle as L
from core.clock import parse_iso
from core.ids import session_id_for
from persistence.pool import create_pool
from persistence.verify import verify_rows
from tests.chaos.history import Record

FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Row:
    """One journal row."""

    actor_id: str
    seq: int
    name: str
    data: dict[str, Any]
    at: datetime
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One row of the `sessions` projection."""

    session_id: str
    state: str
    enp_id: str | None
    seq: int


@dataclass(slots=True)
class Journal:
    rows: list[Row]
    sessions: list[SessionRow] = field(default_factory=list)

    def states(self) -> dict[str, list[Row]]:
        """Session id -> its `session.state` rows, in seq order."""
        out: dict[str, list[Row]] = defaultdict(list)
        for r in sorted(self.rows, key=lambda r: (r.actor_id, r.seq)):
            if r.actor_id.startswith("session:") and r.name == "session.state":
                out[r.actor_id.split(":", 1)[1]].append(r)
        return out


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.detail}"


def check(history: Sequence[Record], journal: Journal) -> list[Violation]:
    """Every property, over one run."""
    return [
        *late_offers(history, journal),
        *double_assignments(journal),
        *stream_faults(history),
        *effect_faults(history, journal),
        *inconsistent_sessions(journal),
    ]


# -- (a) offers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    session_id: str
    notary_id: str
    at: datetime


def events(history: Iterable[Record], name: str | None = None) -> Iterable[Record]:
    """The received events (named `name`, if given)."""
    for r in history:
        f = r.frame
        if r.direction == "received" and f.get("type") == "event":
            if name is None or f.get("name") == name:
                yield r


def offers_made(history: Iterable[Record], journal: Journal) -> dict[str, Offer]:
    """Every offer, as journaled on a notary's topic or received by a client."""
    found: dict[str, Offer] = {}
    for row in journal.rows:
        if row.actor_id.startswith("notary:") and row.name == "offer":
            nid = row.actor_id.split(":", 1)[1]
            d = row.data
            found[d["offer_id"]] = Offer(d["offer_id"], d["session_id"], nid, row.at)
    for r in events(history, "offer"):
        d, nid = r.frame["data"], r.frame["topic"].split(":", 1)[1]
        found.setdefault(
            d["offer_id"], Offer(d["offer_id"], d["session_id"], nid, parse_iso(r.frame["at"]))
        )
    return found


def closed(states: Sequence[Row]) -> Row | None:
    """The first state after REQUESTED: from then on, no offer may be made."""
    return next((r for r in states if r.data.get("state") != L.REQUESTED), None)


def late_offers(history: Sequence[Record], journal: Journal) -> list[Violation]:
    states = journal.states()
    out = []
    for offer in offers_made(history, journal).values():
        end = closed(states.get(offer.session_id, []))
        if end is None:
            continue
        accepted = end.data.get("state") == L.ENP_ASSIGNED and (
            end.data.get("offer_id") == offer.offer_id
        )
        if offer.at > end.at or (offer.at == end.at and not accepted):
            out.append(
                Violation(
                    "offer-after-close",
                    f"{offer.notary_id} offered session {offer.session_id} (offer"
                    f" {offer.offer_id}) at {offer.at.isoformat()}, after its"
                    f" {end.data.get('state')} at {end.at.isoformat()}",
                )
            )
    return out


# -- (b) assignments ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    notary_id: str
    session_id: str
    start: datetime
    stop: datetime  # FOREVER while still active


def spans(journal: Journal) -> list[Span]:
    """Each assignment: from ENP_ASSIGNED to the state that releases the notary."""
    out = []
    for sid, states in journal.states().items():
        for i, row in enumerate(states):
            if row.data.get("state") != L.ENP_ASSIGNED:
                continue
            stop = next(
                (r.at for r in states[i + 1 :] if r.data.get("state") in L.RELEASES_NOTARY),
                FOREVER,
            )
            out.append(Span(str(row.data.get("enp_id")), sid, row.at, stop))
    return out


def double_assignments(journal: Journal) -> list[Violation]:
    all_spans = spans(journal)
    per_session = Counter(s.session_id for s in all_spans)
    out = [
        Violation("assigned-twice", f"session {sid} was assigned {n} times")
        for sid, n in per_session.items()
        if n > 1
    ]
    by_notary = sorted(all_spans, key=lambda s: (s.notary_id, s.start))
    for prev, cur in itertools.pairwise(by_notary):
        if prev.notary_id == cur.notary_id and cur.start < prev.stop:
            out.append(
                Violation(
                    "two-active-sessions",
                    f"{cur.notary_id} was assigned {cur.session_id} at {cur.start.isoformat()}"
                    f" while {prev.session_id} was active (released {prev.stop.isoformat()})",
                )
            )
    return out


# -- (c) streams ----------------------------------------------------------------------


def stream_faults(history: Sequence[Record]) -> list[Violation]:
    out = []
    seen: dict[tuple[int, str], set[int]] = defaultdict(set)
    last: dict[tuple[int, str], int] = {}
    for r in events(history):
        seq, topic = r.frame.get("seq"), r.frame.get("topic")
        if not isinstance(seq, int) or not isinstance(topic, str):
            continue  # ephemeral
        key = (r.conn, topic)
        where = f"{r.user} connection {r.conn}, {topic}"
        if seq in seen[key]:
            out.append(Violation("duplicate-event", f"{where}: seq {seq} received twice"))
        elif key in last and seq != last[key] + 1:
            out.append(Violation("event-gap", f"{where}: seq {seq} after {last[key]}"))
        seen[key].add(seq)
        last[key] = max(seq, last.get(key, 0))
    return out


# -- (d) effects ----------------------------------------------------------------------

# What each state-changing request leaves in its session's journal: (event, state).
EFFECTS: dict[str, tuple[str, str | None]] = {
    "session.request": ("session.state", L.REQUESTED),
    "offer.accept": ("session.state", L.ENP_ASSIGNED),
    "video.start": ("session.state", L.VIDEO_IN_PROGRESS),
    "checks.record": ("checks.recorded", None),
    "act.sign": ("act.signed", None),
    "act.seal": ("act.sealed", None),
    "video.end": ("session.state", L.VIDEO_COMPLETED),
    "session.notarize": ("session.state", L.NOTARIZING),
    "session.distribute": ("session.state", L.DISTRIBUTING),
    "session.cancel": ("session.state", L.CANCELLED),
}


@dataclass(slots=True)
class Request:
    """One request of one user (`rid`), with every reply to it (retries by id included)."""

    user: str
    rid: str
    type: str
    data: dict[str, Any]
    replies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return any(r.get("ok") for r in self.replies)

    def refusals(self) -> list[str]:
        """The error codes it was answered with, if it was never acknowledged."""
        return [] if self.acked else [(r.get("error") or {}).get("code", "") for r in self.replies]


def requests(history: Iterable[Record]) -> dict[tuple[str, str], Request]:
    """Requests by (user, request id), with their replies on any connection."""
    out: dict[tuple[str, str], Request] = {}
    by_conn: dict[tuple[int, str], tuple[str, str]] = {}
    for r in history:
        f = r.frame
        if r.direction == "sent" and "id" in f and "type" in f:
            key = (r.user, str(f["id"]))
            out.setdefault(key, Request(r.user, key[1], f["type"], f.get("data") or {}))
            by_conn[(r.conn, key[1])] = key
        elif r.direction == "received" and f.get("re") is not None:
            found = by_conn.get((r.conn, str(f["re"])))
            if found is not None:
                out[found].replies.append(f)
    return out


def _target(req: Request, offers: dict[str, Offer]) -> str | None:
    """The session a request acted on (answered or not)."""
    d = req.data
    if req.type == "session.request":
        return session_id_for(req.user, str(d.get("idempotency_key")))
    if req.type == "offer.accept":
        offer = offers.get(str(d.get("offer_id")))
        return None if offer is None else offer.session_id
    return None if d.get("session_id") is None else str(d["session_id"])


def _is_effect(row: Row, req: Request) -> bool:
    name, state = EFFECTS[req.type]
    if row.name != name or (state is not None and row.data.get("state") != state):
        return False
    return req.type != "offer.accept" or row.data.get("offer_id") == req.data.get("offer_id")


def effect_faults(history: Sequence[Record], journal: Journal) -> list[Violation]:
    offers = offers_made(history, journal)
    by_actor: dict[str, list[Row]] = defaultdict(list)
    for row in journal.rows:
        by_actor[row.actor_id].append(row)
    reqs = [r for r in requests(history).values() if r.type in EFFECTS]
    acked = {(r.type, _target(r, offers), r.data.get("offer_id")) for r in reqs if r.acked}
    out = []
    for req in reqs:
        sid = _target(req, offers)
        if sid is None:
            continue
        n = sum(_is_effect(row, req) for row in by_actor[f"session:{sid}"])
        what = f"{req.user}'s {req.type} {req.rid} on session {sid}"
        if req.acked and n != 1:
            out.append(
                Violation("acked-effect", f"{what} was acknowledged; its effect is there {n} times")
            )
        elif req.refusals() and n and (req.type, sid, req.data.get("offer_id")) not in acked:
            out.append(Violation("refused-applied", f"{what}: answered {req.refusals()}, applied"))
    return out


# -- (e) sessions ---------------------------------------------------------------------


def _lifecycle_faults(sid: str, states: Sequence[Row]) -> list[Violation]:
    out = []
    prev: str | None = None
    for row in states:
        state = str(row.data.get("state"))
        if not L.can_move(prev, state) or row.data.get("prev") != prev:
            out.append(
                Violation(
                    "bad-transition",
                    f"session {sid} seq {row.seq}: {row.data.get('prev')} -> {state}"
                    f" (the journal was at {prev})",
                )
            )
        prev = state
    return out


def inconsistent_sessions(journal: Journal) -> list[Violation]:
    projections = {s.session_id: s for s in journal.sessions}
    heads: dict[str, int] = defaultdict(int)
    for row in journal.rows:
        heads[row.actor_id] = max(heads[row.actor_id], row.seq)
    out = []
    for sid, states in journal.states().items():
        out.extend(_lifecycle_faults(sid, states))
        last = str(states[-1].data.get("state"))
        enp = next((r.data.get("enp_id") for r in states if r.data.get("enp_id")), None)
        journaled = (last, enp, heads[f"session:{sid}"])
        p = projections.get(sid)
        recorded = None if p is None else (p.state, p.enp_id, p.seq)
        if recorded != journaled:
            ends = "ends terminal" if last in L.TERMINAL else "is live"
            out.append(
                Violation(
                    "session-inconsistent",
                    f"session {sid} {ends}: the journal says (state, notary, seq) = {journaled},"
                    f" its record {recorded}",
                )
            )
    return out


# -- beyond the properties --------------------------------------------------------------


def broken_chains(journal: Journal) -> list[Violation]:
    """Every actor's hash chain verifies (persistence.verify over the rows read)."""
    by_actor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(journal.rows, key=lambda r: (r.actor_id, r.seq)):
        by_actor[r.actor_id].append(asdict(r))
    reports = (verify_rows(actor, rows) for actor, rows in by_actor.items())
    return [Violation("broken-chain", rep.describe()) for rep in reports if not rep.valid]


async def load_journal(dsn: str) -> Journal:
    """The whole journal and the sessions projection at `dsn`, as of one moment
    (one repeatable-read snapshot: a running server cannot write in between)."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            rows = await conn.fetch(
                "SELECT actor_id, seq, name, data, at, prev_hash, hash FROM journal"
                " ORDER BY actor_id, seq"
            )
            sessions = await conn.fetch("SELECT session_id, state, enp_id, seq FROM sessions")
    finally:
        await pool.close()
    return Journal(
        [Row(**dict(r)) for r in rows],
        [SessionRow(**dict(s)) for s in sessions],
    )

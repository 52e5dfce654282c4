"""The Matchmaker's in-memory book: notaries, waiting sessions, open offers.

Kept so that one event costs about the number of available notaries plus a
logarithm of the queue, not waiting x notaries x offers (issue 15):

- `pending`: every session waiting for a notary, by id (with or without an
  offer); `offers`: open offers by id, and `holding`: the offer each notary
  holds, by notary (so "does this notary hold an offer" is one lookup);
- `available`: the notaries that may get an offer now (offerable, holding
  none, not being asked already: `reserve`), kept up to date on every change;
- the waiting sessions *without* an offer, oldest first: a heap keyed by
  (`created_at`, arrival number) with lazy deletion: an entry whose session
  left, got an offer or was pushed again is dropped when it reaches the top.
  The arrival number breaks ties in arrival order, as the stable sort of the
  queue did;
- `blocked`: waiting sessions whose every available notary is excluded
  (each declined or let expire an offer of it). They leave the heap, so a
  matching pass does not look at them again; one comes back to the heap
  only when a notary it has not excluded becomes available. So a blocked
  session always has `available ⊆ excluded`, and a matching pass looks only
  at the heap's top while a notary is available.

So an event costs O(log queue) for the heap, plus, per offer made, one pass
over the available notaries (the ranking); a session set aside costs one
such pass each time it reaches the top with notaries available, which
happens again only after a notary it has not excluded became available.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from actors.scoring import Candidate, Criteria

READY, BLOCKED, OFFERING, OFFERED = "ready", "blocked", "offering", "offered"


@dataclass(slots=True)
class NotaryEntry:
    notary_id: str
    status: str
    offerable: bool
    available_since: float
    candidate: Candidate
    name: str | None = None


@dataclass(slots=True, eq=False)
class Pending:
    session_id: str
    created_at: str
    criteria: Criteria
    preferred: str | None
    excluded: set[str] = field(default_factory=set)
    offer_id: str | None = None
    arrival: int = 0
    where: str = READY
    pushed: int = 0  # the number of this session's live heap entry


class MatchBook:
    """Notaries, the queue and the offers; no I/O, no awaits."""

    def __init__(self) -> None:
        self.notaries: dict[str, NotaryEntry] = {}
        self.pending: dict[str, Pending] = {}
        self.offers: dict[str, tuple[str, str]] = {}  # offer_id -> (session_id, notary_id)
        self.holding: dict[str, set[str]] = {}  # notary_id -> its open offers' ids
        self.available: dict[str, NotaryEntry] = {}
        self.blocked: dict[str, Pending] = {}
        self._heap: list[tuple[str, int, int, Pending]] = []
        self._arrivals = itertools.count()
        self._pushes = itertools.count(1)

    # -- notaries ----------------------------------------------------------------------

    def put_notary(self, entry: NotaryEntry) -> None:
        self.notaries[entry.notary_id] = entry
        self._refresh(entry.notary_id)

    def drop_notary(self, notary_id: str) -> None:
        self.notaries.pop(notary_id, None)
        self.available.pop(notary_id, None)

    def unofferable(self, notary_id: str) -> None:
        """It refused an offer (busy, away, gone): its actor will update us."""
        entry = self.notaries.get(notary_id)
        if entry is not None:
            entry.offerable = False
        self.available.pop(notary_id, None)

    def is_holding(self, notary_id: str) -> bool:
        return notary_id in self.holding

    def _refresh(self, notary_id: str) -> None:
        entry = self.notaries.get(notary_id)
        if entry is None or not entry.offerable or notary_id in self.holding:
            self.available.pop(notary_id, None)
            return
        newly = notary_id not in self.available
        self.available[notary_id] = entry
        if newly and self.blocked:
            self._unblock(notary_id)

    def _unblock(self, notary_id: str) -> None:
        back = [p for p in self.blocked.values() if notary_id not in p.excluded]
        for p in back:
            del self.blocked[p.session_id]
            self._push(p)

    # -- waiting sessions -------------------------------------------------------------

    def add_pending(self, p: Pending) -> None:
        p.arrival = next(self._arrivals)
        self.pending[p.session_id] = p
        if p.offer_id is None:
            self._push(p)
        else:
            p.where = OFFERED

    def pop_pending(self, session_id: str) -> Pending | None:
        """Out of the queue (its heap entry, if any, is dropped lazily)."""
        p = self.pending.pop(session_id, None)
        if p is not None:
            self.blocked.pop(session_id, None)
            p.where = ""
        return p

    def exclude(self, p: Pending, notary_id: str) -> None:
        """It declined or let expire an offer of this session: never again."""
        p.excluded.add(notary_id)

    def _push(self, p: Pending) -> None:
        p.where, p.pushed = READY, next(self._pushes)
        heapq.heappush(self._heap, (p.created_at, p.arrival, p.pushed, p))

    def next_waiting(self) -> Pending | None:
        """The oldest waiting session without an offer that an available
        notary may be offered, or None. Sessions passed over on the way
        (every available notary excluded) are set aside as blocked."""
        heap = self._heap
        while heap and self.available:
            _, _, pushed, p = heap[0]
            if p.where != READY or p.pushed != pushed or self.pending.get(p.session_id) is not p:
                heapq.heappop(heap)  # stale: left, offered, or pushed again since
                continue
            if self._has_candidate(p):
                return p
            heapq.heappop(heap)
            p.where = BLOCKED
            self.blocked[p.session_id] = p
        return None

    def _has_candidate(self, p: Pending) -> bool:
        if len(self.available) > len(p.excluded):
            return True
        return any(nid not in p.excluded for nid in self.available)

    def candidates(self, p: Pending) -> Iterator[tuple[Candidate, float]]:
        """The available notaries this session has not excluded, to rank."""
        excluded = p.excluded
        for nid, n in self.available.items():
            if nid not in excluded:
                yield n.candidate, n.available_since

    def waiting(self) -> int:
        """Waiting sessions without an offer (ready or blocked)."""
        return sum(1 for p in self.pending.values() if p.offer_id is None)

    # -- offers -----------------------------------------------------------------------

    def reserve(self, p: Pending, notary_id: str) -> None:
        """This notary is being asked to hold an offer of this session: neither
        is matched again until the answer (`add_offer`, or `release` and
        `unofferable`)."""
        p.where = OFFERING
        self.available.pop(notary_id, None)

    def release(self, p: Pending) -> None:
        """The notary refused: the session waits again, in its place."""
        if self.pending.get(p.session_id) is p and p.where == OFFERING:
            self._push(p)

    def add_offer(self, p: Pending, offer_id: str, notary_id: str) -> None:
        """The session's offer to this notary is open."""
        p.offer_id, p.where = offer_id, OFFERED
        self.blocked.pop(p.session_id, None)
        self.hold(offer_id, p.session_id, notary_id)

    def hold(self, offer_id: str, session_id: str, notary_id: str) -> None:
        """An open offer (of a session in the queue or not): its notary is not available."""
        self.offers[offer_id] = (session_id, notary_id)
        self.holding.setdefault(notary_id, set()).add(offer_id)
        self.available.pop(notary_id, None)

    def pop_offer(self, offer_id: str) -> tuple[str, str] | None:
        """The offer is over (resolved, withdrawn, forgotten): (session, notary),
        and the notary may be available again. The session's side is the
        caller's (`reopen`, `pop_pending`)."""
        entry = self.offers.pop(offer_id, None)
        if entry is None:
            return None
        notary_id = entry[1]
        held = self.holding.get(notary_id)
        if held is not None:
            held.discard(offer_id)
            if not held:
                del self.holding[notary_id]
                self._refresh(notary_id)
        return entry

    def reopen(self, p: Pending) -> None:
        """The session's offer is over and it still waits: back in the queue."""
        p.offer_id = None
        if self.pending.get(p.session_id) is p and p.where == OFFERED:
            self._push(p)

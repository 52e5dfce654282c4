"""The Matchmaker's book (actors/match_queue.py) and its matching loop, without
Postgres: a stand-in host answers `hold_offer`. The queue is served oldest
first, exclusions and held offers keep a notary from a session, a session
whose every available notary is excluded is set aside until another comes,
and the loop makes the same offers as the old full scan (a reference model
over random operations)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any, cast

from actors.actor import ActorContext
from actors.match_queue import MatchBook, NotaryEntry, Pending
from actors.matchmaker import Matchmaker
from actors.scoring import Candidate, Criteria, best, rank
from core.ids import MATCHMAKER
from core.messages import Message


def entry(nid: str, rating: float = 4.0, since: float = 0.0, offerable: bool = True) -> NotaryEntry:
    return NotaryEntry(nid, "available", offerable, since, Candidate(nid, rating=rating))


def pending(sid: str, created_at: str, preferred: str | None = None) -> Pending:
    return Pending(sid, created_at, Criteria(), preferred)


class Host:
    """Answers `hold_offer` ok unless the notary is in `refuse`; records the asks."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        self.holds: list[tuple[str, str]] = []  # (session, notary)

    async def ask(self, actor_id: str, msg: Message, timeout: float = 30.0) -> Any:
        nid = actor_id.split(":", 1)[1]
        if msg.kind != "hold_offer":
            return {}
        if nid in self.refuse:
            return {"ok": False}
        self.holds.append((msg.data["session_id"], nid))
        return {"ok": True}

    def tell(self, actor_id: str, msg: Message) -> None:
        return None


def matchmaker(host: Host) -> Matchmaker:
    ctx = SimpleNamespace(host=host, settings=SimpleNamespace(offer_timeout_s=30.0), metrics=None)
    return Matchmaker(MATCHMAKER, cast(ActorContext, ctx))


async def enqueue(mm: Matchmaker, sid: str, created_at: str, preferred: str | None = None) -> None:
    # No customer: no favourites to read; the session is known to wait.
    await mm._add_pending(sid, {"created_at": created_at, "preferred_notary_id": preferred})
    await mm._match()


async def online(mm: Matchmaker, nid: str, rating: float = 4.0, offerable: bool = True) -> None:
    data = {
        "notary_id": nid,
        "status": "available" if offerable else "busy",
        "offerable": offerable,
        "available_since": 0.0,
        "profile": {"rating": rating},
    }
    await mm.on_notary_update(Message("notary_update", data))


async def resolved(mm: Matchmaker, sid: str, nid: str, outcome: str) -> None:
    offer_id = next(o for o, (s, n) in mm.book.offers.items() if (s, n) == (sid, nid))
    data = {"offer_id": offer_id, "session_id": sid, "notary_id": nid, "outcome": outcome}
    await mm.on_offer_resolved(Message("offer_resolved", data))


# -- the book ---------------------------------------------------------------------------


def test_the_oldest_waits_first_and_ties_keep_arrival_order() -> None:
    book = MatchBook()
    for sid, at in [("late", "2026-01-02"), ("b", "2026-01-01"), ("a", "2026-01-01")]:
        book.add_pending(pending(sid, at))
    book.put_notary(entry("n1"))
    order = []
    while (p := book.next_waiting()) is not None:
        order.append(p.session_id)
        book.add_offer(p, f"o-{p.session_id}", "n1")
        book.pop_offer(f"o-{p.session_id}")  # n1 free again; the session keeps waiting elsewhere
        book.pop_pending(p.session_id)
    assert order == ["b", "a", "late"]


def test_no_notary_no_work_and_holding_is_one_lookup() -> None:
    book = MatchBook()
    book.add_pending(pending("s1", "1"))
    assert book.next_waiting() is None  # nobody available: the queue is not looked at
    book.put_notary(entry("n1"))
    p = book.next_waiting()
    assert p is not None
    book.add_offer(p, "o1", "n1")
    assert book.is_holding("n1") and "n1" not in book.available
    assert book.next_waiting() is None
    assert book.pop_offer("o1") == ("s1", "n1")
    assert not book.is_holding("n1") and "n1" in book.available
    book.reopen(p)
    assert book.next_waiting() is p


def test_an_excluded_session_is_set_aside_until_another_notary_comes() -> None:
    book = MatchBook()
    old, new = pending("old", "1"), pending("new", "2")
    book.add_pending(old)
    book.add_pending(new)
    book.exclude(old, "n1")
    book.put_notary(entry("n1"))
    assert book.next_waiting() is new
    assert list(book.blocked) == ["old"]
    assert [c.notary_id for c, _ in list(book.candidates(new))] == ["n1"]
    book.add_offer(new, "o-new", "n1")
    # Another notary the old session has not excluded: back in the queue.
    book.put_notary(entry("n2"))
    assert book.blocked == {} and book.next_waiting() is old
    assert [c.notary_id for c, _ in list(book.candidates(old))] == ["n2"]
    # A notary it excluded coming back does not bring it back.
    book.add_offer(old, "o-old", "n2")
    book.pop_offer("o-old")
    book.reopen(old)
    book.exclude(old, "n2")
    assert book.next_waiting() is None and list(book.blocked) == ["old"]
    book.unofferable("n2")
    book.put_notary(entry("n2"))
    assert list(book.blocked) == ["old"]


def test_a_session_that_leaves_is_gone_from_the_queue_and_the_blocked() -> None:
    book = MatchBook()
    for sid in ("s1", "s2", "s3"):
        book.add_pending(pending(sid, sid))
    book.exclude(book.pending["s3"], "n1")
    book.put_notary(entry("n1"))
    assert book.pop_pending("s1") is not None
    assert book.next_waiting() is book.pending["s2"]
    book.pop_pending("s2")
    assert book.next_waiting() is None and list(book.blocked) == ["s3"]
    book.pop_pending("s3")
    assert book.blocked == {} and book.pending == {}
    # Enqueued again after leaving: one live entry, served once.
    again = pending("s1", "s1")
    book.add_pending(again)
    assert book.next_waiting() is again


def test_a_refusing_notary_is_not_available_until_it_says_so() -> None:
    book = MatchBook()
    book.add_pending(pending("s1", "1"))
    book.put_notary(entry("n1"))
    book.unofferable("n1")
    assert book.next_waiting() is None
    book.put_notary(entry("n1"))
    assert book.next_waiting() is book.pending["s1"]


def test_best_is_the_first_of_the_ranking_ties_included() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        pool = [
            (
                Candidate(f"n{j}", rating=rnd.choice([3.0, 4.0]), tariff=500.0),
                rnd.choice([1.0, 2.0]),
            )
            for j in rnd.sample(range(50), rnd.randrange(1, 12))
        ]
        q = Criteria(price_preference=rnd.choice([None, 400.0]))
        assert best(pool, q) is rank(pool, q)[0][0]
    assert best([], Criteria()) is None


# -- the matchmaker's loop ----------------------------------------------------------------


async def test_offers_go_oldest_first_to_the_best_or_the_preferred() -> None:
    host = Host()
    mm = matchmaker(host)
    await enqueue(mm, "s1", "1")
    await enqueue(mm, "s2", "2", preferred="n-low")
    await enqueue(mm, "s3", "3")
    assert host.holds == []
    await online(mm, "n-low", rating=1.0)
    assert host.holds == [("s1", "n-low")]
    await online(mm, "n-best", rating=5.0)
    await online(mm, "n-mid", rating=3.0)
    # s2 prefers n-low, which holds s1's offer: its best available instead.
    assert host.holds[1:] == [("s2", "n-best"), ("s3", "n-mid")]
    mm.cancel_all_timers()


async def test_closed_and_assigned_sessions_leave_and_free_their_notary() -> None:
    host = Host()
    mm = matchmaker(host)
    for sid in ("s1", "s2", "s3"):
        await enqueue(mm, sid, sid)
    await online(mm, "n1")
    assert host.holds == [("s1", "n1")]
    await mm.on_session_closed(Message("session_closed", {"session_id": "s1"}))
    assert host.holds[1:] == [("s2", "n1")]  # withdrawn, and n1 offered the next
    await mm.on_session_assigned(Message("session_assigned", {"session_id": "s2"}))
    assert "s2" not in mm.book.pending and not mm.book.is_holding("n1")
    await online(mm, "n1")
    assert host.holds[2:] == [("s3", "n1")]
    mm.cancel_all_timers()


async def test_a_declined_session_goes_to_another_notary_never_back() -> None:
    host = Host()
    mm = matchmaker(host)
    await online(mm, "n1", rating=5.0)
    await enqueue(mm, "s1", "1")
    await online(mm, "n1", rating=5.0, offerable=False)  # busy with the offer
    await resolved(mm, "s1", "n1", "declined")
    await online(mm, "n1", rating=5.0)
    await enqueue(mm, "s2", "2")
    assert host.holds == [("s1", "n1"), ("s2", "n1")]
    assert list(mm.book.blocked) == ["s1"]
    await online(mm, "n2", rating=1.0)
    assert host.holds[2:] == [("s1", "n2")]
    mm.cancel_all_timers()


async def test_an_offer_refused_by_the_notary_goes_to_the_next_one() -> None:
    host = Host()
    mm = matchmaker(host)
    host.refuse.add("n-best")
    await online(mm, "n-best", rating=5.0)
    await online(mm, "n-next", rating=3.0)
    await enqueue(mm, "s1", "1")
    assert host.holds == [("s1", "n-next")]
    assert not mm.book.notaries["n-best"].offerable
    # Until its actor says it is offerable again, it is offered nothing.
    await enqueue(mm, "s2", "2")
    assert host.holds == [("s1", "n-next")]
    host.refuse.clear()
    await online(mm, "n-best", rating=5.0)
    assert host.holds[1:] == [("s2", "n-best")]
    mm.cancel_all_timers()


# -- the same offers as the full scan ------------------------------------------------------


class Reference:
    """The matching of before issue 15, by full scans: every waiting session
    (sorted by `created_at`) against every notary and every open offer. In
    rounds, as the Matchmaker now asks: each round gives each session, oldest
    first, its best notary not taken earlier in the round; a notary that
    refuses is skipped, and its session matched again in the next round."""

    def __init__(self) -> None:
        self.notaries: dict[str, NotaryEntry] = {}
        self.pending: dict[str, Pending] = {}
        self.offers: dict[str, tuple[str, str]] = {}

    def match(self, refuse: set[str], holds: list[tuple[str, str]]) -> None:
        while picked := self._round():
            for p, nid in picked:
                if nid in refuse:
                    self.notaries[nid].offerable = False
                    continue
                p.offer_id = f"{p.session_id}/{nid}"
                self.offers[p.offer_id] = (p.session_id, nid)
                holds.append((p.session_id, nid))

    def _round(self) -> list[tuple[Pending, str]]:
        picked: list[tuple[Pending, str]] = []
        for p in sorted(self.pending.values(), key=lambda p: p.created_at):
            if p.offer_id is not None:
                continue
            pool = [
                (n.candidate, n.available_since)
                for n in self.notaries.values()
                if n.offerable
                and n.notary_id not in p.excluded
                and all(h != n.notary_id for _, h in self.offers.values())
                and all(h != n.notary_id for _, h in picked)
            ]
            if pool:
                ranked = [c for c, _ in rank(pool, p.criteria)]
                chosen = next((c for c in ranked if c.notary_id == p.preferred), ranked[0])
                picked.append((p, chosen.notary_id))
        return picked


async def test_the_same_offers_as_the_full_scan_over_random_operations() -> None:
    rnd = random.Random(15)
    host, ref, ref_holds = Host(), Reference(), list[tuple[str, str]]()
    mm = matchmaker(host)
    notaries = [f"n{i}" for i in range(6)]
    for step in range(1500):
        op = rnd.random()
        if op < 0.3:
            sid, at = f"s{step}", f"{rnd.randrange(100):03d}"
            preferred = rnd.choice([None, *notaries])
            ref.pending[sid] = pending(sid, at, preferred)
            ref.match(host.refuse, ref_holds)
            await enqueue(mm, sid, at, preferred)
        elif op < 0.55:
            nid, rating = rnd.choice(notaries), float(rnd.randrange(6))
            offerable = rnd.random() < 0.7
            host.refuse = {n for n in notaries if rnd.random() < 0.1}
            ref.notaries[nid] = entry(nid, rating, offerable=offerable)
            if offerable:
                ref.match(host.refuse, ref_holds)
            await online(mm, nid, rating, offerable)
        elif op < 0.85 and ref.offers:
            oid = rnd.choice(sorted(ref.offers))
            sid, nid = ref.offers.pop(oid)
            outcome = rnd.choice(["declined", "expired", "accepted", "withdrawn"])
            p = ref.pending[sid]
            if outcome == "accepted":
                del ref.pending[sid]
            else:
                p.offer_id = None
                if outcome != "withdrawn":
                    p.excluded.add(nid)
            ref.match(host.refuse, ref_holds)
            await resolved(mm, sid, nid, outcome)
        elif ref.pending:
            sid = rnd.choice(sorted(ref.pending))
            p = ref.pending.pop(sid)
            if p.offer_id is not None:
                ref.offers.pop(p.offer_id)
                ref.match(host.refuse, ref_holds)
            await mm.on_session_closed(Message("session_closed", {"session_id": sid}))
        assert host.holds == ref_holds, step
    assert len(ref_holds) > 100
    mm.cancel_all_timers()


class Mailbox:
    """A mailbox with messages still waiting: what the matchmaker tells itself."""

    stopped = False
    depth = 1

    def __init__(self) -> None:
        self.told: list[Message] = []

    def tell(self, msg: Message) -> None:
        self.told.append(msg)


async def test_notaries_freed_in_a_burst_are_matched_once_after_the_burst() -> None:
    host = Host()
    mm = matchmaker(host)
    for sid in ("s1", "s2", "s3"):
        await enqueue(mm, sid, sid)
    mm._cell = mailbox = Mailbox()
    await online(mm, "n1")
    await online(mm, "n2")
    # More messages wait behind these updates: one match, after them.
    assert host.holds == [] and [m.kind for m in mailbox.told] == ["match_queued"]
    mailbox.depth = 0
    await mm.receive(mailbox.told[0])
    assert host.holds == [("s1", "n1"), ("s2", "n2")]
    await online(mm, "n3")  # an empty mailbox: at once
    assert host.holds[2:] == [("s3", "n3")]
    mm.cancel_all_timers()

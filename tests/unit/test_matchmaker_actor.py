"""The Matchmaker driven directly: it offers each waiting session to its best
available notary (shared/MATCHING.md), lists the available ones, and never
offers to a notary that is offline or already holding an offer."""

from __future__ import annotations

from core.ids import MATCHMAKER, notary_address, session_address
from tests.unit.conftest import Rig, refused

C = "c1"


async def test_the_best_available_notary_gets_the_offer(rig: Rig) -> None:
    await rig.online("n-low", rating=2.0, specializations=[])
    await rig.online("n-best", rating=5.0)
    await rig.online("n-mid", rating=3.0)
    sid = await rig.request(C)
    await rig.inbox.wait(notary_address("n-best"), "offer", session_id=sid)
    assert await rig.offers("n-low") == []
    assert await rig.offers("n-mid") == []


async def test_a_preferred_notary_comes_first(rig: Rig) -> None:
    await rig.online("n-best", rating=5.0)
    await rig.online("n-low", rating=1.0)
    sid = await rig.request(C, preferred_notary_id="n-low")
    await rig.inbox.wait(notary_address("n-low"), "offer", session_id=sid)
    assert await rig.offers("n-best") == []


async def test_waiting_sessions_are_offered_oldest_first(rig: Rig) -> None:
    first = await rig.request(C, key="first")
    second = await rig.request("c2", key="second")
    await rig.online("n1")
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=first)
    await rig.online("n2")
    await rig.inbox.wait(notary_address("n2"), "offer", session_id=second)


async def test_available_lists_the_best_first_up_to_the_limit(rig: Rig) -> None:
    await rig.online("n1", rating=1.0, name="Atty. One")
    await rig.online("n2", rating=5.0, name="Atty. Two")
    await rig.online("n3", rating=3.0, name="Atty. Three")
    customer = rig.caller(C, "customer")
    listed = await rig.ask(MATCHMAKER, "available", {"limit": 2}, customer)
    assert [n["notary_id"] for n in listed["notaries"]] == ["n2", "n3"]
    assert listed["notaries"][0]["name"] == "Atty. Two"
    assert all(n["status"] == "available" for n in listed["notaries"])
    scores = [n["score"] for n in listed["notaries"]]
    assert scores == sorted(scores, reverse=True)
    everyone = await rig.ask(MATCHMAKER, "available", {}, customer)
    assert [n["notary_id"] for n in everyone["notaries"]] == ["n2", "n3", "n1"]
    # A notary holding an offer is not available.
    sid = await rig.request(C)
    await rig.inbox.wait(notary_address("n2"), "offer", session_id=sid)
    rest = await rig.ask(MATCHMAKER, "available", {}, customer)
    assert [n["notary_id"] for n in rest["notaries"]] == ["n3", "n1"]


async def test_no_offer_to_an_offline_notary(rig: Rig) -> None:
    await rig.online("n1")
    await rig.notary("n1", "presence.offline")
    sid = await rig.request(C)
    assert await rig.offers("n1") == []
    assert await rig.ask(MATCHMAKER, "available", {}, rig.caller(C, "customer")) == {"notaries": []}
    # The session waits; back online, the notary gets it.
    await rig.notary("n1", "presence.online")
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=sid)


async def test_no_offer_to_a_notary_away(rig: Rig) -> None:
    await rig.online("n1")
    await rig.notary("n1", "presence.set", {"status": "away"})
    sid = await rig.request(C)
    assert await rig.offers("n1") == []
    await rig.notary("n1", "presence.set", {"status": "available"})
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=sid)


async def test_a_closed_session_withdraws_its_offer(rig: Rig) -> None:
    await rig.online("n1")
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address("n1"), "offer", session_id=sid)
    await rig.session(sid, "session.cancel", C, "customer", {"reason": "found another way"})
    withdrawn = await rig.inbox.wait(notary_address("n1"), "offer.withdrawn")
    assert withdrawn["data"] == {
        "offer_id": offer["data"]["offer_id"],
        "session_id": sid,
        "reason": "session_closed",
    }
    # Free again: the next session is offered to it.
    other = await rig.request("c2")
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=other)


async def test_a_session_that_refuses_its_offer_is_never_offered_again(rig: Rig) -> None:
    """Issue 19: the Matchmaker's queue can be stale (a lost report); when the
    session refuses an offer, the session's state wins: out of the queue for
    good, counted, and no notary is offered it again."""
    await rig.online("n1")
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address("n1"), "offer", session_id=sid)
    # Another path assigned the session meanwhile (as after a lost report).
    await rig.ask(
        session_address(sid),
        "assign",
        {"enp_id": "n-elsewhere", "offer_id": "offer-elsewhere", "tariff": 100.0},
        None,
    )
    # The pending entry is back for this test: the report of the assignment is lost.
    await rig.matchmaker("enqueue", {"session_id": sid, "customer_id": C})
    err = await refused("conflict", lambda: rig.notary("n1", "offer.accept", offer["data"]))
    assert "no longer waiting" in err.message
    await rig.inbox.wait(
        notary_address("n1"), "offer.withdrawn", offer_id=offer["data"]["offer_id"]
    )
    assert rig.metrics.registry.get_sample_value("enf_offers_refused_by_session_total") == 1
    # n1 is free again; a second notary comes online: neither is offered it.
    other = await rig.request("c2", key="other")
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=other)
    await rig.online("n2")
    offered = [e["data"]["session_id"] for n in ("n1", "n2") for e in await rig.offers(n)]
    assert offered.count(sid) == 1  # the one refused offer, never made again


async def test_an_assigned_session_leaves_the_queue_even_without_the_notarys_report(
    rig: Rig,
) -> None:
    sid = await rig.request(C)
    await rig.ask(
        session_address(sid),
        "assign",
        {"enp_id": "n-elsewhere", "offer_id": "offer-elsewhere", "tariff": 100.0},
        None,
    )
    await rig.online("n1")
    other = await rig.request("c2", key="other")
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=other)
    assert [e["data"]["session_id"] for e in await rig.offers("n1")] == [other]

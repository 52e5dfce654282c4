"""The SessionActor driven directly: its lifecycle (PROTOCOL §5), its
refusals in the contract's order (`not_found`, then `conflict`), and what it
owes others (the Matchmaker, the notary, the delivery outcomes)."""

from __future__ import annotations

import logging
from functools import partial

import pytest

from core.ids import session_address
from core.messages import Message, Role
from persistence.keys import mask
from persistence.outbox import event_id, mark_dead
from tests.flows import HAPPY_STATES
from tests.unit.conftest import CONSENT, PH, Rig, StartRig, refused

C, N = "c1", "n1"

HAPPY = HAPPY_STATES


async def test_the_whole_lifecycle_through_the_matchmaker(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actors.session")
    rig.inbox.follow("presence")
    sid = await rig.assigned(C, N)
    await rig.join_both(sid, C, N)

    video = await rig.session(sid, "video.start", N, "enp")
    assert video.data == {"provider": "webrtc", "ice_servers": [], "recorder": False}
    await rig.inbox.wait(session_address(sid), "session.state", state="VIDEO_IN_PROGRESS")
    await rig.act(sid, C, N)
    await rig.session(sid, "video.end", N, "enp")
    await rig.session(sid, "session.notarize", N, "enp")
    notarized = await rig.inbox.wait(session_address(sid), "session.notarized")
    await rig.session(sid, "session.distribute", C, "customer", {"recipients": []})

    assert rig.states(sid) == HAPPY
    events = rig.inbox.durable(session_address(sid))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # Distributing to no one completes at once, in the same commit, by the system.
    completed = events[-1]
    assert completed["data"] == {"state": "COMPLETED", "prev": "DISTRIBUTING", "by": "system"}
    assert completed["seq"] == events[-2]["seq"] + 1
    assert f"session {sid} state DISTRIBUTING -> COMPLETED" in caplog.messages

    view = await rig.snapshot(sid, C, "customer")
    assert view["state"] == "COMPLETED"
    assert view["envelope_id"] == notarized["data"]["envelope_id"]
    assert (view["signed"], view["sealed"]) == (True, True)
    assert (view["amount"], view["platform_fee"], view["enp_fee"]) == (500.0, 100.0, 400.0)
    assert view["checks"] == {"comprehension_confirmed": True, "duress_check_passed": True}
    assert {p["user_id"]: p["role"] for p in view["participants"]} == {C: "customer", N: "enp"}
    # NOTARIZED frees the notary for the next session.
    await rig.inbox.wait("presence", "notary.presence", skip=1, notary_id=N, status="available")


async def test_assign_directly_then_deliveries_complete_the_session(rig: Rig) -> None:
    sid = await rig.request(C)
    assigned = await rig.ask(
        session_address(sid),
        "assign",
        {"enp_id": N, "offer_id": "offer-1", "tariff": 1000.0, "enp_name": "Atty. N"},
    )
    assert assigned == {"session_id": sid, "seq": 2}
    # Assigned once: a second notary's accepted offer finds it taken.
    again = {"enp_id": "n2", "offer_id": "offer-2", "tariff": 1.0}
    await refused("conflict", lambda: rig.ask(session_address(sid), "assign", again))

    await rig.notarized(sid, C, N)
    recipients = [
        {"channel": "webhook", "to": "https://example.org/hook"},
        {"channel": "sms", "to": "+639171234567"},
    ]
    await rig.session(sid, "session.distribute", N, "enp", {"recipients": recipients})
    distributing = await rig.inbox.wait(session_address(sid), "session.state", state="DISTRIBUTING")
    # Sealed in the journal, with a masked hint.
    journaled = distributing["data"]["recipients"]
    assert [r["hint"] for r in journaled] == [mask(r["to"]) for r in recipients]
    assert all(r["to"] not in str(j) for r, j in zip(recipients, journaled, strict=True))

    # The delivery worker reports the webhook; the session finds the SMS's
    # outcome in the outbox by itself.
    webhook_id = event_id(sid, distributing["seq"], "document.distributed", 0)
    report = {"recipient": 0, "delivery_id": webhook_id, "status": "delivered", "reason": None}
    rig.host.tell(session_address(sid), Message("delivery_result", report))
    await rig.inbox.wait(session_address(sid), "delivery.status", recipient=0, status="delivered")
    assert rig.states(sid)[-1] == "DISTRIBUTING"

    sms_id = event_id(sid, distributing["seq"], "sms", 1)
    await mark_dead(rig.pool, sms_id, 12, "carrier refused")
    rig.host.tell(session_address(sid), Message("sync_deliveries"))
    dead = await rig.inbox.wait(session_address(sid), "delivery.status", recipient=1)
    assert dead["data"]["status"] == "dead_letter"
    assert dead["data"]["reason"] == "carrier refused"
    assert dead["data"]["delivery_id"] == sms_id
    done = await rig.inbox.wait(session_address(sid), "session.state", state="COMPLETED")
    assert done["data"] == {"state": "COMPLETED", "prev": "DISTRIBUTING", "by": "system"}
    # A repeated report changes nothing.
    rig.host.tell(session_address(sid), Message("delivery_result", report))
    view = await rig.snapshot(sid, C, "customer")
    assert view["state"] == "COMPLETED"
    assert view["seq"] == done["seq"]
    assert (view["amount"], view["platform_fee"], view["enp_fee"]) == (1000.0, 200.0, 800.0)


async def test_a_repeated_request_gets_the_same_session(rig: Rig) -> None:
    sid = await rig.request(C, key="same")
    assert await rig.request(C, key="same") == sid
    assert rig.states(sid) == ["REQUESTED"]
    other = {"idempotency_key": "same", "document": {"id": "x", "sha256": "0" * 64}}
    await refused(
        "conflict",
        lambda: rig.request_to(
            session_address(sid), "session.request", other, rig.caller(C, "customer")
        ),
    )


async def test_cancel_by_the_customer_while_waiting(rig: Rig) -> None:
    sid = await rig.request(C)
    await rig.session(sid, "session.cancel", C, "customer", {"reason": "changed my mind"})
    cancelled = await rig.inbox.wait(session_address(sid), "session.state", state="CANCELLED")
    assert cancelled["data"] == {
        "state": "CANCELLED",
        "prev": "REQUESTED",
        "by": C,
        "reason": "changed my mind",
    }
    # The Matchmaker forgot it: a notary coming online gets no offer.
    await rig.online(N)
    assert await rig.offers(N) == []
    await refused(
        "conflict", lambda: rig.session(sid, "session.cancel", C, "customer", {"reason": "again"})
    )


async def test_strangers_find_no_session(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    strangers: list[tuple[str, Role]] = [("c2", "customer"), ("n2", "enp"), (N, "customer")]
    for user, role in [*strangers, (C, "enp")]:
        await refused("not_found", partial(rig.session, sid, "session.join", user, role))
    await refused("not_found", lambda: rig.snapshot(sid, "c2", "customer"))
    await refused(
        "not_found", lambda: rig.session(sid, "session.cancel", "c2", "customer", {"reason": "x"})
    )
    # not_found comes before conflict: a stranger's video.start in the wrong state.
    await refused("not_found", lambda: rig.session(sid, "video.start", "n2", "enp"))
    # An admin sees it.
    view = await rig.snapshot(sid, "admin-1", "admin")
    assert view["state"] == "ENP_ASSIGNED"


async def test_video_waits_for_both_parties_and_consent(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    err = await refused("conflict", lambda: rig.session(sid, "video.start", N, "enp"))
    assert err.message == "waiting for customer and enp to join"
    await rig.session(sid, "session.join", C, "customer", {"location": PH})
    await rig.session(sid, "session.join", N, "enp", {"location": PH})
    err = await refused("conflict", lambda: rig.session(sid, "video.start", N, "enp"))
    assert "has not consented to recording and privacy" in err.message
    await rig.session(sid, "session.join", C, "customer", {"consent": CONSENT})
    await rig.session(sid, "video.start", N, "enp")
    # Rejoining the call: the same answer, no new event.
    again = await rig.session(sid, "video.start", N, "enp")
    assert again.data["provider"] == "webrtc"
    assert rig.states(sid) == HAPPY[:3]


async def test_consent_cannot_be_withdrawn(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    await rig.session(sid, "session.join", C, "customer", {"consent": CONSENT})
    err = await refused(
        "conflict",
        lambda: rig.session(sid, "session.join", C, "customer", {"consent": {"recording": False}}),
    )
    assert "consent cannot be withdrawn" in err.message
    assert "recording" in err.message
    # Repeating what was given is fine.
    await rig.session(sid, "session.join", C, "customer", {"consent": {"privacy": True}})


async def test_the_act_in_order(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    seal = {"signature": "ZW5wLXNpZw==", "seal": "c2VhbA=="}
    await refused("conflict", lambda: rig.session(sid, "act.seal", N, "enp", seal))
    await rig.in_video(sid, C, N)
    err = await refused("conflict", lambda: rig.session(sid, "act.seal", N, "enp", seal))
    assert "comprehension and duress" in err.message
    checks = {"comprehension_confirmed": True, "duress_check_passed": True}
    await rig.session(sid, "checks.record", N, "enp", checks)
    err = await refused("conflict", lambda: rig.session(sid, "act.seal", N, "enp", seal))
    assert err.message == "the principal has not signed yet"
    await refused("conflict", lambda: rig.session(sid, "session.notarize", N, "enp"))
    await rig.session(sid, "act.sign", C, "customer", {"signature": "c2ln"})
    await refused(
        "conflict", lambda: rig.session(sid, "act.sign", C, "customer", {"signature": "c2ln"})
    )
    await rig.session(sid, "act.seal", N, "enp", seal)
    await refused("conflict", lambda: rig.session(sid, "act.seal", N, "enp", seal))


async def test_notarize_needs_the_act_signed_and_sealed(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    await rig.in_video(sid, C, N)
    await rig.session(sid, "video.end", N, "enp")
    err = await refused("conflict", lambda: rig.session(sid, "session.notarize", N, "enp"))
    assert err.message == "the act must be signed and sealed first"
    # A session can still be cancelled after the video, with an incomplete act.
    await rig.session(sid, "session.cancel", N, "enp", {"reason": "principal left"})
    await rig.inbox.wait(session_address(sid), "session.state", state="CANCELLED")


async def test_no_cancel_once_notarizing(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    await rig.notarized(sid, C, N)
    err = await refused(
        "conflict", lambda: rig.session(sid, "session.cancel", C, "customer", {"reason": "late"})
    )
    assert err.message == "cannot cancel in state NOTARIZED"
    await refused("conflict", lambda: rig.session(sid, "video.start", N, "enp"))
    await refused("conflict", lambda: rig.session(sid, "session.notarize", N, "enp"))


async def test_the_act_needs_everyone_in_an_allowed_country(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    await rig.in_video(sid, C, N)
    abroad = {"lat": 1.35, "lng": 103.82, "country": "SG"}
    await rig.session(sid, "session.join", C, "customer", {"location": abroad})
    err = await refused(
        "forbidden", lambda: rig.session(sid, "act.sign", C, "customer", {"signature": "c2ln"})
    )
    assert err.message == "parties must be in PH during the act; your location says SG"


async def test_leave_and_rejoin_are_journaled(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    await rig.session(sid, "session.join", C, "customer")
    await rig.session(sid, "session.leave", C, "customer")
    left = await rig.inbox.wait(session_address(sid), "participant.left", user_id=C)
    assert left["data"] == {"user_id": C, "role": "customer"}
    join = await rig.session(sid, "session.join", C, "customer", {"since_seq": left["seq"]})
    assert join.follow == {session_address(sid): left["seq"]}
    await rig.inbox.wait(session_address(sid), "participant.joined", skip=1, user_id=C)
    await refused(
        "bad_request",
        lambda: rig.session(sid, "session.join", C, "customer", {"since_seq": 1000}),
    )


async def test_a_passivated_session_comes_back_from_its_snapshot(make_rig: StartRig) -> None:
    rig = await make_rig(snapshot_every=2)
    sid = await rig.assigned(C, N)
    await rig.join_both(sid, C, N)
    before = await rig.snapshot(sid, "admin-1", "admin")
    address = session_address(sid)
    shard = rig.host.local_shard(address)
    assert shard is not None
    await shard.cells[address].passivate()
    assert not rig.host.is_active(address)
    after = await rig.snapshot(sid, "admin-1", "admin")
    # Presence is live (connections), not durable: compare the rest.
    for view in (before, after):
        view.pop("participants")
    assert after == before
    await rig.session(sid, "video.start", N, "enp")
    await rig.inbox.wait(address, "session.state", state="VIDEO_IN_PROGRESS")


async def test_an_expired_request_is_cancelled_and_leaves_the_queue(make_rig: StartRig) -> None:
    rig = await make_rig(request_ttl_s=0.2)
    sid = await rig.request(C)
    cancelled = await rig.inbox.wait(session_address(sid), "session.state", state="CANCELLED")
    assert cancelled["data"]["by"] == "system"
    assert cancelled["data"]["reason"] == "no_notary"
    # A notary coming online now gets no offer for it.
    await rig.online(N)
    assert await rig.offers(N) == []

"""The NotaryActor driven directly: presence (online, away, offline; only
the notary itself), the one offer it may hold, and accepting or declining it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from core.ids import notary_address, session_address
from core.messages import Role
from tests.unit.conftest import Rig, StartRig, refused

C, N = "c1", "n1"


async def test_presence_online_and_offline(rig: Rig) -> None:
    rig.inbox.follow("presence")
    await rig.put_notary(N)
    online = await rig.notary(N, "presence.online")
    assert online.data == {"status": "available"}
    assert online.follow == {notary_address(N): 0}
    assert online.track
    await rig.inbox.wait("presence", "notary.presence", notary_id=N, status="available")
    listed = await rig.matchmaker("presence_list")
    assert listed == {"notaries": [{"notary_id": N, "status": "available"}]}

    away = await rig.notary(N, "presence.set", {"status": "away"})
    assert away.data == {"status": "away"}
    await rig.inbox.wait("presence", "notary.presence", notary_id=N, status="away")

    await rig.notary(N, "presence.offline")
    await rig.inbox.wait("presence", "notary.presence", notary_id=N, status="offline")
    assert await rig.matchmaker("presence_list") == {"notaries": []}
    err = await refused("conflict", lambda: rig.notary(N, "presence.set", {"status": "away"}))
    assert err.message == "go online first (presence.online)"


async def test_only_the_notary_speaks_for_itself(rig: Rig) -> None:
    others: list[tuple[str, Role]] = [("n2", "enp"), (N, "customer")]
    for user, role in others:
        caller = rig.caller(user, role)
        await refused(
            "forbidden", partial(rig.request_to, notary_address(N), "presence.online", {}, caller)
        )


async def test_an_expired_commission_cannot_go_online(rig: Rig) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    await rig.put_notary(N, commission_expires=yesterday.isoformat())
    err = await refused("forbidden", lambda: rig.notary(N, "presence.online"))
    assert err.message == "your notarial commission has expired"


async def test_one_offer_at_a_time(rig: Rig) -> None:
    await rig.online(N)
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address(N), "offer", session_id=sid)
    assert offer["data"]["amount"] == 500.0
    assert offer["data"]["document_type"] == "affidavit"
    # Holding an offer, it is busy: a second one is refused.
    other = {"offer_id": "offer-x", "session_id": "s-x", "expires_at": offer["data"]["expires_at"]}
    assert await rig.ask(notary_address(N), "hold_offer", other) == {"ok": False, "status": "busy"}
    # And so is it while away, or offline.
    await rig.notary(N, "offer.decline", {"offer_id": offer["data"]["offer_id"]})
    await rig.notary(N, "presence.set", {"status": "away"})
    assert await rig.ask(notary_address(N), "hold_offer", other) == {"ok": False, "status": "away"}
    await rig.notary(N, "presence.offline")
    refusal = await rig.ask(notary_address(N), "hold_offer", other)
    assert refusal == {"ok": False, "status": "offline"}


async def test_accept_assigns_the_session(rig: Rig) -> None:
    rig.inbox.follow("presence")
    await rig.online(N)
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address(N), "offer", session_id=sid)
    offer_id = offer["data"]["offer_id"]
    accepted = await rig.notary(N, "offer.accept", {"offer_id": offer_id})
    assert accepted.data == {"session_id": sid}
    assert accepted.follow == {session_address(sid): 1}
    assigned = await rig.inbox.wait(session_address(sid), "session.state", state="ENP_ASSIGNED")
    assert assigned["data"]["enp_id"] == N
    assert assigned["data"]["offer_id"] == offer_id
    assert assigned["data"]["enp_name"] == f"Atty. {N}"
    await rig.inbox.wait("presence", "notary.presence", notary_id=N, status="busy")
    # A retry (its reply lost) gets the same answer.
    again = await rig.notary(N, "offer.accept", {"offer_id": offer_id})
    assert again.data == {"session_id": sid}
    await refused("conflict", lambda: rig.notary(N, "offer.accept", {"offer_id": "no-such"}))
    # With a session, still busy: no other offer.
    await rig.request("c2")
    assert len(await rig.offers(N)) == 1


async def test_decline_frees_the_notary_and_the_session_moves_on(rig: Rig) -> None:
    await rig.online(N)
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address(N), "offer", session_id=sid)
    offer_id = offer["data"]["offer_id"]
    await rig.notary(N, "offer.decline", {"offer_id": offer_id})
    withdrawn = await rig.inbox.wait(notary_address(N), "offer.withdrawn", offer_id=offer_id)
    assert withdrawn["data"] == {"offer_id": offer_id, "session_id": sid, "reason": "declined"}
    await refused("conflict", lambda: rig.notary(N, "offer.accept", {"offer_id": offer_id}))
    # Declined by n1, the session goes to the next notary.
    await rig.online("n2")
    await rig.inbox.wait(notary_address("n2"), "offer", session_id=sid)
    assert len(await rig.offers(N)) == 1
    assert rig.states(sid) == ["REQUESTED"]


async def test_going_offline_withdraws_the_offer_held(rig: Rig) -> None:
    await rig.online(N)
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address(N), "offer", session_id=sid)
    await rig.notary(N, "presence.offline")
    withdrawn = await rig.inbox.wait(notary_address(N), "offer.withdrawn")
    assert withdrawn["data"]["offer_id"] == offer["data"]["offer_id"]
    assert withdrawn["data"]["reason"] == "notary_offline"
    await rig.online("n2")
    await rig.inbox.wait(notary_address("n2"), "offer", session_id=sid)


async def test_an_offer_not_taken_in_time_expires(make_rig: StartRig) -> None:
    rig = await make_rig(offer_timeout_s=0.2)
    await rig.online(N)
    sid = await rig.request(C)
    offer = await rig.inbox.wait(notary_address(N), "offer", session_id=sid)
    offer_id = offer["data"]["offer_id"]
    expired = await rig.inbox.wait(notary_address(N), "offer.expired", offer_id=offer_id)
    assert expired["data"] == {"offer_id": offer_id, "session_id": sid}
    await refused("conflict", lambda: rig.notary(N, "offer.accept", {"offer_id": offer_id}))
    assert rig.states(sid) == ["REQUESTED"]

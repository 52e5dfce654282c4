"""Done-when 1: a full lifecycle over real WebSockets, JSON and msgpack."""

from __future__ import annotations

import pytest

from tests.conftest import Harness
from tests.flows import (
    HAPPY_STATES,
    assert_gapless,
    doc,
    online_notary,
    run_video_to_completion,
    session_events,
)

STATES = HAPPY_STATES


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_full_lifecycle(server: Harness, codec: str) -> None:
    best = await online_notary(server, "n-best", codec, rating=5.0)
    other = await online_notary(server, "n-other", codec, rating=3.0)
    customer = await server.client("cust-1", "customer", codec=codec)

    reply = await customer.call("session.request", {"idempotency_key": "k1", "document": doc()})
    sid = reply["session_id"]
    assert reply["state"] == "REQUESTED"
    first = await customer.expect("session.state", state="REQUESTED")
    assert first["seq"] == 1 and first["data"]["prev"] is None

    # The better-scored notary gets the offer first, and declines it.
    offer = await best.expect("offer", session_id=sid)
    assert not [e for e in other.events if e["name"] == "offer"]
    assert await best.call("offer.decline", {"offer_id": offer["data"]["offer_id"]}) == {}
    withdrawn = await best.expect("offer.withdrawn", offer_id=offer["data"]["offer_id"])
    assert withdrawn["data"]["reason"] == "declined"

    # The cascade reaches the other notary, who accepts.
    offer2 = await other.expect("offer", session_id=sid)
    assert offer2["data"]["amount"] == 500.0
    accepted = await other.call("offer.accept", {"offer_id": offer2["data"]["offer_id"]})
    assert accepted == {"session_id": sid}
    assigned = await other.expect("session.state", state="ENP_ASSIGNED")
    assert assigned["data"]["enp_id"] == "n-other"
    await customer.expect("session.state", state="ENP_ASSIGNED")

    await run_video_to_completion(customer, other, sid)

    for client, start in ((customer, 1), (other, assigned["seq"])):
        evs = session_events(client, sid)
        assert_gapless(evs, start)
        states = [e["data"]["state"] for e in evs if e["name"] == "session.state"]
        assert states == STATES[STATES.index(evs[0]["data"]["state"]) :]

    # The snapshot agrees, and the session list shows it completed.
    snap = await customer.call("session.join", {"session_id": sid})
    assert snap["session"]["state"] == "COMPLETED"
    assert snap["session"]["enp_id"] == "n-other"
    assert snap["session"]["amount"] == 500.0
    assert snap["session"]["platform_fee"] == 100.0 and snap["session"]["enp_fee"] == 400.0


async def test_reply_comes_before_the_events_it_caused(server: Harness) -> None:
    notary = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")

    reply = await customer.request("session.request", {"idempotency_key": "x", "document": doc()})
    event = await customer.expect("session.state", state="REQUESTED")
    assert customer.frames.index(reply) < customer.frames.index(event)

    offer = await notary.expect("offer")
    got = await notary.request("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    assigned = await notary.expect("session.state", state="ENP_ASSIGNED")
    assert got["ok"] and assigned["seq"] == 2
    assert notary.frames.index(got) < notary.frames.index(assigned)
    # Only ENP_ASSIGNED onwards: the notary follows the session from its acceptance.
    assert [e["seq"] for e in session_events(notary, reply["data"]["session_id"])] == [2]

    # A journaled request on a followed topic: reply first, then its event.
    sid = reply["data"]["session_id"]
    join = await customer.request(
        "session.join", {"session_id": sid, "consent": {"recording": True, "privacy": True}}
    )
    joined = await customer.expect("participant.joined", user_id="c1")
    assert customer.frames.index(join) < customer.frames.index(joined)

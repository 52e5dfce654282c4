"""A request whose reply was lost is sent again with the same id and data
(PROTOCOL §7, docs/design.md "Idempotency"): every request that changes
state answers the repeat with its first reply and applies nothing twice.
`offer.decline` once answered a repeat `conflict` ("no longer open"): its
reply was not journaled with the decline."""

from __future__ import annotations

from typing import Any

from enf_client import EnfClient

from tests.conftest import Harness
from tests.flows import PH, doc, online_notary, passed_checks, session_events


async def twice(c: EnfClient, rid: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """`type_` sent twice under one id: the second reply is the first one."""
    first = await c.request(type_, data, id=rid)
    assert first["ok"], first
    again = await c.request(type_, data, id=rid)
    assert again == first, (type_, first, again)
    result: dict[str, Any] = first["data"]
    return result


async def test_every_state_change_answers_a_repeat_with_its_first_reply(server: Harness) -> None:
    notary = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")

    # A request declined by n1 (twice under one id), then accepted by n2.
    sid = (
        await twice(customer, "r1", "session.request", {"idempotency_key": "a", "document": doc()})
    )["session_id"]
    offer = await notary.expect("offer")
    await twice(notary, "d1", "offer.decline", {"offer_id": offer["data"]["offer_id"]})
    declined = [e for e in notary.events if e.get("name") == "offer.withdrawn"]
    assert [e["data"]["reason"] for e in declined] == ["declined"]  # one decline applied
    notary = await online_notary(server, "n2")  # n1 declined: the session goes to n2
    offer = await notary.expect("offer")
    assigned = await twice(notary, "a1", "offer.accept", {"offer_id": offer["data"]["offer_id"]})
    assert assigned == {"session_id": sid}
    await customer.expect("session.state", state="ENP_ASSIGNED")

    consent = {"recording": True, "privacy": True}
    await customer.call("session.join", {"session_id": sid, "consent": consent, "location": PH})
    await notary.call("session.join", {"session_id": sid, "location": PH})
    ref = {"session_id": sid}
    await twice(notary, "v1", "video.start", ref)
    await customer.expect("session.state", state="VIDEO_IN_PROGRESS")
    await twice(notary, "k1", "checks.record", passed_checks(sid))
    await twice(customer, "s1", "act.sign", {**ref, "signature": "c2ln"})
    await twice(notary, "e1", "act.seal", {**ref, "signature": "ZQ==", "seal": "cw=="})
    await twice(notary, "x1", "video.end", ref)
    await twice(notary, "n1", "session.notarize", ref)
    await customer.expect("session.notarized")
    await twice(customer, "t1", "session.distribute", {**ref, "recipients": []})
    await customer.expect("session.state", state="COMPLETED")

    # A second session, cancelled twice under one id.
    other = (await customer.call("session.request", {"idempotency_key": "b", "document": doc(2)}))[
        "session_id"
    ]
    await twice(
        customer, "c1", "session.cancel", {"session_id": other, "reason": "changed my mind"}
    )
    await customer.expect("session.state", state="CANCELLED")

    # Nothing was applied twice: each event of the act once.
    names = [e["name"] for e in session_events(customer, sid)]
    for once in ("act.signed", "act.sealed", "checks.recorded", "session.notarized"):
        assert names.count(once) == 1, (once, names)
    states = [
        e["data"]["state"] for e in session_events(customer, sid) if e["name"] == "session.state"
    ]
    assert len(states) == len(set(states)), states

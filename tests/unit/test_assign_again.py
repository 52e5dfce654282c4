"""An assignment asked again gets the same answer (the cluster chaos run: the
session committed ENP_ASSIGNED, the answer was lost with a killed shard, the
notary's retry by id was refused, and the notary was freed while still
holding the session)."""

from __future__ import annotations

from core.clock import now_iso
from core.ids import MATCHMAKER, notary_address, session_address
from core.messages import Message
from tests.unit.conftest import Rig, refused

C, N = "c1", "n1"


async def test_the_same_assignment_asked_again_is_answered_the_same(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    offer = await rig.inbox.wait(notary_address(N), "offer", session_id=sid)
    oid = offer["data"]["offer_id"]
    assigned = await rig.inbox.wait(session_address(sid), "session.state", state="ENP_ASSIGNED")
    again = {"enp_id": N, "offer_id": oid, "tariff": 500.0}
    answer = await rig.ask(session_address(sid), "assign", again)
    assert answer == {"session_id": sid, "seq": assigned["seq"]}
    # Another notary, or another offer, is still refused.
    for other in ({**again, "enp_id": "n2"}, {**again, "offer_id": "another-offer"}):

        async def ask(o: dict[str, object] = other) -> object:
            return await rig.ask(session_address(sid), "assign", o)

        await refused("conflict", ask)
    states = [e.name for e in await rig.journal.read(session_address(sid))]
    assert states.count("session.state") == 2  # REQUESTED, ENP_ASSIGNED: nothing new


async def test_a_late_enqueue_of_an_assigned_session_makes_no_offer(rig: Rig) -> None:
    """The session's enqueue sent again after its shard restarted, once it has
    its notary: the matchmaker asks the session's record, and offers nothing."""
    sid = await rig.assigned(C, N)
    await rig.online("n2")
    late = {"session_id": sid, "customer_id": C, "created_at": now_iso()}
    rig.host.tell(MATCHMAKER, Message("enqueue", late))
    assert await rig.offers("n2") == []  # answered after the enqueue: nothing was offered

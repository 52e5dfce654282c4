"""The runtime's promises about messages (issue 13, items 3 and 4):

- a message between actors (a tell) is never refused for a full mailbox:
  backpressure is for client requests (asks) only;
- an ask answered `unavailable` because it timed out before it started never
  runs afterwards (PROTOCOL §7: `unavailable` changes nothing).
"""

from __future__ import annotations

from typing import Any

import pytest

from core.clock import now_iso
from core.errors import ProtocolError
from core.ids import MATCHMAKER, notary_address, session_address, session_id_for
from core.messages import Message
from tests.unit.conftest import StartRig, document

MAILBOX = 8


async def test_a_full_mailbox_refuses_asks_but_never_a_tell(make_rig: StartRig) -> None:
    rig = await make_rig(mailbox_size=MAILBOX)
    # A session that waits for a notary, and that the matchmaker does not know
    # of (its enqueue is what this test sends, below).
    sid = await rig.request("c-full")
    rig.host.tell(MATCHMAKER, Message("session_closed", {"session_id": sid}))
    await rig.online("n1")
    assert await rig.offers("n1") == []
    cell = rig.host._cell(MATCHMAKER)
    # Fill the matchmaker's mailbox before it runs anything (no await in between).
    asks = [cell.post(Message("presence_list")) for _ in range(MAILBOX - cell.depth)]
    with pytest.raises(ProtocolError) as refused:
        cell.post(Message("presence_list"))
    assert refused.value.code == "unavailable"
    # The session's enqueue arrives now: it must not be dropped.
    request: dict[str, Any] = {
        "session_id": sid,
        "customer_id": "c-full",
        "created_at": now_iso(),
        "document_type": "affidavit",
    }
    rig.host.tell(MATCHMAKER, Message("enqueue", request))
    assert cell.depth == MAILBOX + 1
    for ask in asks:
        assert "notaries" in await ask
    await rig.inbox.wait(notary_address("n1"), "offer", session_id=sid)


async def test_an_ask_that_timed_out_before_it_started_never_runs(make_rig: StartRig) -> None:
    rig = await make_rig()
    sid = session_id_for("c-late", "k")
    address = session_address(sid)
    caller = rig.caller("c-late", "customer")
    data = {"idempotency_key": "k", "document": document()}
    # The session's actor is still loading (activation) when the ask times out.
    with pytest.raises(ProtocolError) as late:
        await rig.host.ask(address, Message("session.request", data, caller), timeout=0.0)
    assert late.value.code == "unavailable"
    # The mailbox is in order: once this is answered, the late ask was skipped or run.
    with pytest.raises(ProtocolError) as missing:
        await rig.snapshot(sid, "c-late", "customer")
    assert missing.value.code == "not_found"
    assert await rig.journal.read(address) == []


async def test_lookups_of_ids_that_do_not_exist_keep_no_actor(make_rig: StartRig) -> None:
    """Issue 13 item 7: 10k random ids must not make 10k resident actors."""
    rig = await make_rig()
    before = rig.host.actor_count()
    for n in range(200):
        with pytest.raises(ProtocolError) as missing:
            await rig.snapshot(f"no-such-session-{n}", "c-probe", "customer")
        assert missing.value.code == "not_found"
    assert rig.host.actor_count() == before
    # A session that exists stays resident, and answers.
    sid = await rig.request("c-real")
    assert (await rig.snapshot(sid, "c-real", "customer"))["state"] == "REQUESTED"
    assert rig.host.is_active(session_address(sid))

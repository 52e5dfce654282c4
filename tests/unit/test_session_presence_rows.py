"""The journal records changes of who is present, not every join (issue 18,
item 7: one session reached 14 `participant.joined` rows from re-joins)."""

from __future__ import annotations

from core.ids import session_address
from core.messages import Message
from tests.unit.conftest import CONSENT, PH, Rig

C, N = "c1", "n1"


async def test_repeated_joins_journal_one_row_until_something_changes(rig: Rig) -> None:
    sid = await rig.assigned(C, N)
    address = session_address(sid)
    body = {"consent": CONSENT, "location": PH}
    for _ in range(5):  # the same party, the same consent and place: one row
        await rig.session(sid, "session.join", C, "customer", body)
    names = [e.name for e in await rig.journal.read(address)]
    assert names.count("participant.joined") == 1, names
    # A new place is a change: one more row, carrying it.
    moved = {**PH, "lat": 14.6}
    await rig.session(sid, "session.join", C, "customer", {"location": moved})
    rows = [e for e in await rig.journal.read(address) if e.name == "participant.joined"]
    assert len(rows) == 2 and rows[-1].data["location"] == moved


async def test_no_participant_left_after_the_session_ended(rig: Rig) -> None:
    """A party's grace runs out after the session ended (it dropped just
    before the end): a finished session's journal stays closed. Found by
    the SIGKILL chaos run (its projection and journal disagreed)."""
    sid = await rig.assigned(C, N)
    address = session_address(sid)
    await rig.session(sid, "session.join", C, "customer", {"consent": CONSENT, "location": PH})
    rig.host.tell(address, Message("conn_closed", {"user_id": C, "connection_id": f"conn-{C}"}))
    await rig.session(sid, "session.cancel", C, "customer", {"reason": "changed my mind"})
    rig.host.tell(address, Message("grace_expired", {"user_id": C}))  # as its timer would
    await rig.snapshot(sid, C, "customer")  # the mailbox is in order: both handled by now
    names = [e.name for e in await rig.journal.read(address)]
    ended = max(
        i for i, e in enumerate(await rig.journal.read(address)) if e.name == "session.state"
    )
    assert "participant.left" not in names[ended:], names

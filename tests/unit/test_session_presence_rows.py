"""The journal records changes of who is present, not every join (issue 18,
item 7: one session reached 14 `participant.joined` rows from re-joins)."""

from __future__ import annotations

from core.ids import session_address
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

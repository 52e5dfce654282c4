"""Re-joins at the head from a second connection (the benchmark's actor read)."""

from __future__ import annotations

from tests.conftest import Harness
from tests.flows import assigned_session


async def test_second_connection_rejoins_at_head_repeatedly(server: Harness) -> None:
    first, _notary, sid = await assigned_session(server)
    await first.call(
        "session.join", {"session_id": sid, "consent": {"recording": True, "privacy": True}}
    )
    second = await server.client("c1", "customer")
    head = (await second.call("session.join", {"session_id": sid}))["session"]["seq"]
    for i in range(50):
        reply = await second.request(
            "session.join", {"session_id": sid, "since_seq": head}, id=f"j{i}", timeout=5
        )
        assert reply["ok"], reply
    assert not [e for e in second.events if e.get("seq", 0) <= head]

"""Presence: subscribe (full list, then changes), statuses, reconnect grace."""

from __future__ import annotations

from enf_client import EnfClient

from tests.conftest import Harness, MakeServer
from tests.flows import assigned_session, online_notary, put_notary, request_session


async def test_subscribe_gets_full_list_then_changes(server: Harness) -> None:
    await online_notary(server, "n1")
    watcher = await server.client("c1", "customer")
    listed = await watcher.call("presence.subscribe")
    assert listed == {"notaries": [{"notary_id": "n1", "status": "available"}]}

    n2 = await online_notary(server, "n2")
    ev = await watcher.expect("notary.presence", notary_id="n2", status="available")
    assert "seq" not in ev and ev["topic"] == "presence"
    await n2.call("presence.set", {"status": "away"})
    await watcher.expect("notary.presence", notary_id="n2", status="away")
    await n2.call("presence.offline")
    await watcher.expect("notary.presence", notary_id="n2", status="offline")
    # An offer makes a notary busy.
    customer = await server.client("c2", "customer")
    await request_session(customer)
    await watcher.expect("notary.presence", notary_id="n1", status="busy")


async def test_away_notary_gets_no_offer(server: Harness) -> None:
    away = await online_notary(server, "n-away", rating=5)
    await away.call("presence.set", {"status": "away"})
    other = await online_notary(server, "n-other", rating=1)
    customer = await server.client("c1", "customer")
    await request_session(customer)
    await other.expect("offer")
    assert not [e for e in away.events if e["name"] == "offer"]


async def test_notary_reconnect_grace(make_server: MakeServer) -> None:
    server = await make_server(reconnect_grace_s=0.5)
    watcher = await server.client("w", "admin")
    await watcher.call("presence.subscribe")
    n = await online_notary(server, "n1")
    await watcher.expect("notary.presence", notary_id="n1", status="available")
    # Dropped and back within the grace: no change anyone sees, missed offers replayed.
    seq = 0
    await n.close()
    customer = await server.client("c1", "customer")
    await request_session(customer)
    # The offer is made while the notary is away (it is still within its grace).
    await watcher.expect("notary.presence", notary_id="n1", status="busy")
    n = EnfClient(server.ws_url, server.token("n1", "enp"))
    await n.connect()
    back = await n.call("presence.online", {"since_seq": seq})
    assert back["status"] == "busy"
    offer = await n.expect("offer")  # replayed from the notary's topic
    assert offer["seq"] == 1
    assert not [e for e in watcher.events if e["data"].get("status") == "offline"]
    await n.call("offer.decline", {"offer_id": offer["data"]["offer_id"]})
    # Gone for longer than the grace: offline.
    await n.close()
    await watcher.expect("notary.presence", notary_id="n1", status="offline", timeout=5)


async def test_participant_grace_then_left(make_server: MakeServer) -> None:
    server = await make_server(reconnect_grace_s=0.4)
    customer, n, sid = await assigned_session(server)
    await customer.call(
        "session.join", {"session_id": sid, "consent": {"recording": True, "privacy": True}}
    )
    await n.call("session.join", {"session_id": sid})
    await n.expect("participant.joined", user_id="c1")
    snap = await n.call("session.join", {"session_id": sid})
    online = {p["user_id"]: p["online"] for p in snap["session"]["participants"]}
    assert online == {"c1": True, "n1": True}
    await customer.close()
    left = await n.expect("participant.left", user_id="c1", timeout=5)
    assert left["data"]["role"] == "customer"
    # Video cannot start without both parties.
    r = await n.request("video.start", {"session_id": sid})
    assert r["error"]["code"] == "conflict"


async def test_presence_online_requires_profile_free_and_reports_status(
    server: Harness,
) -> None:
    await put_notary(server, "n1")
    n = await server.client("n1", "enp")
    r = await n.request("presence.set", {"status": "away"})
    assert r["error"]["code"] == "conflict"  # not online yet
    assert (await n.call("presence.online")) == {"status": "available"}
    assert (await n.call("presence.set", {"status": "away"})) == {"status": "away"}

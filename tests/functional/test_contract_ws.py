"""Issue 17: the parts of the WebSocket contract (PROTOCOL §3-5, §8) that no
other test held to one outcome: `welcome`, `session.leave`, admins as
observers, cancels by an admin and by the notary, `video.start` again in
the call, ICE candidates, `limit`, `presence.offline`, the payloads of
`checks.recorded` and `act.sealed`. Its error and close codes are in
test_contract_ws_errors.py."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.conftest import Harness, MakeServer
from tests.flows import (
    ADMIN,
    PH,
    assigned_session,
    bearer,
    call_under_way,
    http_call,
    in_the_call,
    online_notary,
    passed_checks,
    request_session,
    session_events,
    sign_and_seal,
)

# -- welcome ---------------------------------------------------------------------------


async def test_welcome_carries_the_connection_id_and_the_heartbeat(
    make_server: MakeServer,
) -> None:
    h = await make_server(heartbeat_s=0.4)
    first = await h.client("c1", "customer")
    second = await h.client("c1", "customer")
    assert first.welcome is not None and second.welcome is not None
    assert {k: first.welcome[k] for k in ("user_id", "role")} == {
        "user_id": "c1",
        "role": "customer",
    }
    ids = {first.welcome["connection_id"], second.welcome["connection_id"]}
    assert len(ids) == 2 and all(isinstance(i, str) and i for i in ids), ids
    assert first.welcome["heartbeat_s"] == 0.4
    # `heartbeat_s` is the interval of the server's pings: a client that does
    # not answer pings by itself sees them come.
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(h.ws_url, headers=bearer(h.token("c2", "customer")), autoping=False) as ws,
    ):
        welcome = await ws.receive_json(timeout=5)
        assert welcome["type"] == "welcome" and welcome["data"]["heartbeat_s"] == 0.4
        pings: list[float] = []
        while len(pings) < 2:
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.PING:
                pings.append(time.monotonic())
                await ws.pong(msg.data)
        assert 0.3 <= pings[1] - pings[0] < 5, pings


# -- session.leave, observers, cancels --------------------------------------------------


async def test_session_leave_over_the_socket(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    await customer.call(
        "session.join",
        {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH},
    )
    await notary.call("session.join", {"session_id": sid, "location": PH})
    await notary.expect("participant.joined", user_id="c1")
    assert await customer.call("session.leave", {"session_id": sid}) == {}
    left = await notary.expect("participant.left", user_id="c1")
    assert left["data"] == {"user_id": "c1", "role": "customer"} and left["seq"] > 0
    # Gone from the call: the notary cannot start it without the customer.
    r = await notary.request("video.start", {"session_id": sid})
    assert r["error"]["code"] == "conflict" and "customer" in r["error"]["message"], r
    # Leaving is for participants only.
    admin = await server.client(ADMIN, "admin")
    r = await admin.request("session.leave", {"session_id": sid})
    assert r["error"]["code"] == "forbidden", r


async def test_an_admin_joins_as_an_observer(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    admin = await server.client(ADMIN, "admin")
    snap = (await admin.call("session.join", {"session_id": sid, "since_seq": 0}))["session"]
    assert snap["state"] == "ENP_ASSIGNED"
    assert {p["user_id"] for p in snap["participants"]} == {"c1", "n1"}
    # It follows the session from the start (since_seq 0) and live from then on.
    await admin.expect("session.state", state="REQUESTED")
    await admin.expect("session.state", state="ENP_ASSIGNED")
    await customer.call(
        "session.join", {"session_id": sid, "consent": {"recording": True, "privacy": True}}
    )
    joined = await admin.expect("participant.joined", user_id="c1")
    # Nobody was told the admin joined: its join is no event.
    await notary.call("session.join", {"session_id": sid})
    await customer.expect("participant.joined", user_id="n1")
    names = [(e["name"], e["data"].get("user_id")) for e in session_events(customer, sid)]
    assert ("participant.joined", ADMIN) not in names, names
    assert [e["seq"] for e in session_events(admin, sid)][-1] >= joined["seq"]
    again = (await notary.call("session.join", {"session_id": sid}))["session"]
    assert ADMIN not in {p["user_id"] for p in again["participants"]}


@pytest.mark.parametrize("who", ["admin", "enp"])
async def test_cancel_by_an_admin_or_the_notary(server: Harness, who: str) -> None:
    customer, notary, sid = await assigned_session(server)
    canceller = notary if who == "enp" else await server.client(ADMIN, "admin")
    by = "n1" if who == "enp" else ADMIN
    assert await canceller.call("session.cancel", {"session_id": sid, "reason": "by " + who}) == {}
    for c in (customer, notary):
        state = await c.expect("session.state", state="CANCELLED")
        assert state["data"]["prev"] == "ENP_ASSIGNED"
        assert state["data"]["by"] == by and state["data"]["reason"] == "by " + who
    status, snap = await http_call(server, "GET", f"/v1/sessions/{sid}", server.token(by, who))
    assert status == 200 and snap["state"] == "CANCELLED"


async def test_cancel_after_the_seal_conflicts(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    await in_the_call(customer, notary, sid)
    await sign_and_seal(customer, notary, sid)
    admin = await server.client(ADMIN, "admin")
    for c in (customer, notary, admin):
        r = await c.request("session.cancel", {"session_id": sid, "reason": "too late"})
        assert r["error"]["code"] == "conflict", r


# -- the call -----------------------------------------------------------------------------


async def test_video_start_again_during_the_call_reissues_the_settings(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    first = await in_the_call(customer, notary, sid)
    head = (await notary.call("session.join", {"session_id": sid}))["session"]["seq"]
    again = await notary.call("video.start", {"session_id": sid})
    assert again == first and again["provider"] == "webrtc"
    # No state change: the same state, and no new event (a ping that follows
    # the re-issue on the same socket comes after anything it caused).
    snap = (await notary.call("session.join", {"session_id": sid}))["session"]
    assert snap["state"] == "VIDEO_IN_PROGRESS" and snap["seq"] == head
    await notary.call("ping")
    assert [e for e in session_events(notary, sid) if e["seq"] > head] == []


async def test_signal_carries_ice_candidates(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    await in_the_call(customer, notary, sid)
    candidate = {
        "candidate": "candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    sent = {"session_id": sid, "to": "n1", "kind": "ice", "candidate": candidate}
    assert await customer.call("signal", sent) == {}
    got = await notary.expect("signal", kind="ice")
    assert got["topic"] == f"session:{sid}" and "seq" not in got
    assert got["data"] == {"from": "c1", "kind": "ice", "candidate": candidate}
    # Relayed to `to` only: the sender does not get its own candidate back.
    await customer.call("ping")
    assert not [e for e in customer.events if e["name"] == "signal"]


async def test_the_act_events_carry_what_was_recorded(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    await in_the_call(customer, notary, sid)
    await notary.call(
        "checks.record",
        {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": False},
    )
    checks = await customer.expect("checks.recorded")
    assert checks["data"] == {
        "comprehension_confirmed": True,
        "duress_check_passed": False,
        "by": "n1",
    }
    await notary.call("checks.record", passed_checks(sid))
    checks = await customer.expect("checks.recorded")
    assert checks["data"]["duress_check_passed"] is True and checks["seq"] > 0
    await customer.call("act.sign", {"session_id": sid, "signature": "Y3VzdA=="})
    signed = await notary.expect("act.signed")
    assert signed["data"] == {"user_id": "c1", "signature": "Y3VzdA=="}
    await notary.call("act.seal", {"session_id": sid, "signature": "ZW5w", "seal": "c2VhbA=="})
    sealed = await customer.expect("act.sealed")
    assert sealed["data"] == {"user_id": "n1", "signature": "ZW5w", "seal": "c2VhbA=="}
    assert sealed["seq"] == signed["seq"] + 1
    snap = (await customer.call("session.join", {"session_id": sid}))["session"]
    assert snap["checks"]["comprehension_confirmed"] and snap["checks"]["duress_check_passed"]


async def test_a_party_away_past_the_grace_pauses_the_act_until_it_is_back(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=0.3)
    customer, notary, sid = await call_under_way(h)
    await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
    await customer.close()
    paused = await notary.expect("session.paused", timeout=10)
    assert paused["data"] == {"reason": "party_left", "user_id": "c1"} and paused["seq"] > 0
    r = await notary.request("checks.record", passed_checks(sid))
    assert r["error"]["code"] == "conflict", r
    # Back with a token issued before the pause: identity not verified again.
    now = int(time.time())
    stale = await h.client("c1", "customer", iat=now - 30)
    r = await stale.request("session.join", {"session_id": sid})
    assert r["error"]["code"] == "forbidden", r
    # With one issued after it: the act resumes; the signature given before stands.
    fresh = await h.client("c1", "customer", iat=now + 2)
    await fresh.call("session.join", {"session_id": sid, "location": PH})
    await notary.expect("session.resumed")
    await notary.call("checks.record", passed_checks(sid))
    await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
    await fresh.expect("act.sealed")


# The timers of §5 that end a session by themselves (ENF_JOIN_WINDOW_S,
# ENF_PAUSE_TIMEOUT_S, ENF_RECORDING_READY_TIMEOUT_S).


async def test_a_call_not_started_within_the_join_window_is_cancelled(
    make_server: MakeServer,
) -> None:
    h = await make_server(join_window_s=0.5)
    customer, notary, _sid = await assigned_session(h)
    for c in (customer, notary):
        state = await c.expect("session.state", state="CANCELLED", timeout=5)
        assert (state["data"]["reason"], state["data"]["by"]) == ("join_window", "system")


async def test_a_pause_longer_than_the_pause_timeout_fails_the_session(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=0.2, pause_timeout_s=0.5)
    customer, notary, _sid = await call_under_way(h)
    await customer.close()
    state = await notary.expect("session.state", state="FAILED", timeout=8)
    assert (state["data"]["reason"], state["data"]["by"]) == ("party_lost", "system")


# -- presence and matching ---------------------------------------------------------------


async def test_notaries_available_honours_limit(server: Harness) -> None:
    for i, rating in enumerate((5.0, 4.0, 3.0)):
        await online_notary(server, f"n{i}", rating=rating)
    customer = await server.client("c1", "customer")
    everyone = (await customer.call("notaries.available"))["notaries"]
    assert [n["notary_id"] for n in everyone] == ["n0", "n1", "n2"]
    two = (await customer.call("notaries.available", {"limit": 2}))["notaries"]
    assert two == everyone[:2]
    one = (await customer.call("notaries.available", {"limit": 1}))["notaries"]
    assert one == everyone[:1]
    for bad in (0, -1, 101, "2", 1.5):
        r = await customer.request("notaries.available", {"limit": bad})
        assert r["error"]["code"] == "bad_request", (bad, r)


async def test_no_offers_after_presence_offline(server: Harness) -> None:
    # The better notary goes offline: the offer goes to the other one.
    gone = await online_notary(server, "n-gone", rating=5.0)
    other = await online_notary(server, "n-other", rating=1.0)
    assert await gone.call("presence.offline") == {}
    customer = await server.client("c1", "customer")
    listed = (await customer.call("notaries.available"))["notaries"]
    assert [n["notary_id"] for n in listed] == ["n-other"]
    sid = await request_session(customer)
    offer = await other.expect("offer", session_id=sid)
    # Declined by the other: nobody is left to offer it to; still none for n-gone.
    await other.call("offer.decline", {"offer_id": offer["data"]["offer_id"]})
    await other.expect("offer.withdrawn", offer_id=offer["data"]["offer_id"])
    await gone.call("ping")
    assert not [e for e in gone.events if e["name"] == "offer"]
    watcher = await server.client("w", "customer")
    presence = (await watcher.call("presence.subscribe"))["notaries"]
    # Listed or not (§4 is silent), never as anything that could take an offer.
    assert all(n["status"] == "offline" for n in presence if n["notary_id"] == "n-gone"), presence

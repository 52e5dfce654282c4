"""Done-when 2: the server process is SIGKILLed at several points of a session
and restarted on the same database. Clients re-join with `since_seq`, get
exactly the events they missed, finish the session; no acknowledged request
is lost and a retried request is not applied twice."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from enf_client import EnfClient

from tests.flows import (
    HAPPY_STATES,
    PH,
    assert_gapless,
    distribute_to_completion,
    doc,
    end_and_notarize,
    passed_checks,
    put_notary,
    session_events,
)
from tests.server_process import ServerProcess, server_env

pytestmark = pytest.mark.slow


def _last_seq(c: EnfClient, sid: str) -> int:
    evs = session_events(c, sid)
    seq: int = evs[-1]["seq"] if evs else 0
    return seq


async def test_kill_at_three_points_and_finish(database: str, tmp_path: Path) -> None:
    # One server process that the test kills and restarts.
    env = server_env(
        database,
        tmp_path,
        ENF_HOST="127.0.0.1",
        ENF_LOG_FORMAT="json",
        ENF_RECONNECT_GRACE_S="30",
    )
    cl = ServerProcess(env, tmp_path / "server.log")
    await cl.start()
    try:
        await put_notary(cl, "n1", name="Atty. One", tariff=300.0, rating=4.5)

        # --- 1. killed after REQUESTED (no notary online yet) ---------------------
        customer = await cl.client("c1", "customer")
        req = {"idempotency_key": "deed-1", "document": doc(1)}
        sid = (await customer.call("session.request", req, id="req-1"))["session_id"]
        await customer.expect("session.state", state="REQUESTED")
        seen_customer = list(session_events(customer, sid))
        await cl.crash_and_restart()

        customer = await cl.client("c1", "customer")
        # The same idempotency key returns the same session, not a new one.
        again = await customer.call("session.request", req, id="req-1")
        assert again == {"session_id": sid, "state": "REQUESTED"}
        notary = await cl.client("n1", "enp")
        await notary.call("presence.online")
        offer = await notary.expect("offer", session_id=sid, timeout=15)
        accept_id = "acc-1"
        await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]}, id=accept_id)
        assigned = await notary.expect("session.state", state="ENP_ASSIGNED")
        await customer.expect("session.state", state="ENP_ASSIGNED")
        # The customer's stream after the restart replayed seq 1 (session.request
        # follows from the start) and then went on without a gap.
        assert_gapless(session_events(customer, sid))
        assert session_events(customer, sid)[0] == seen_customer[0]

        # --- 2. killed after ENP_ASSIGNED --------------------------------------------
        cust_last = _last_seq(customer, sid)
        notary_last = _last_seq(notary, sid)
        notary_topic_last = max(e["seq"] for e in notary.events if e["topic"] == "notary:n1")
        await cl.crash_and_restart()

        # The notary comes back first; its join is an event the customer misses.
        notary = await cl.client("n1", "enp")
        missed_offers = await notary.call("presence.online", {"since_seq": notary_topic_last})
        assert missed_offers["status"] == "busy"  # still holds the assigned session
        # A retried accept (same id) gives the same answer and applies nothing twice.
        assert await notary.call(
            "offer.accept", {"offer_id": offer["data"]["offer_id"]}, id=accept_id
        ) == {"session_id": sid}
        await notary.call(
            "session.join", {"session_id": sid, "since_seq": notary_last, "location": PH}
        )
        customer = await cl.client("c1", "customer")
        snap = await customer.call(
            "session.join",
            {
                "session_id": sid,
                "since_seq": cust_last,
                "consent": {"recording": True, "privacy": True},
                "location": PH,
            },
        )
        assert snap["session"]["state"] == "ENP_ASSIGNED"
        missed = await customer.expect("participant.joined", user_id="n1")
        assert missed["seq"] == cust_last + 1
        await notary.call("video.start", {"session_id": sid})
        await customer.expect("session.state", state="VIDEO_IN_PROGRESS")

        # --- 3. killed in VIDEO_IN_PROGRESS, after acknowledged checks and signature --
        await notary.call("checks.record", passed_checks(sid), id="chk-1")
        await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"}, id="sign-1")
        await notary.expect("act.signed")
        cust_last = _last_seq(customer, sid)
        notary_last = _last_seq(notary, sid)
        await cl.crash_and_restart()

        customer = await cl.client("c1", "customer")
        notary = await cl.client("n1", "enp")
        await customer.call("session.join", {"session_id": sid, "since_seq": cust_last})
        await notary.call("session.join", {"session_id": sid, "since_seq": notary_last})
        # Retries after the crash: the same ids return the first answers.
        assert await notary.call("checks.record", passed_checks(sid), id="chk-1") == {}
        assert (
            await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"}, id="sign-1")
            == {}
        )
        await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
        await end_and_notarize(customer, notary, sid)
        await distribute_to_completion(customer, notary, sid)

        # Each connection since the last restart saw a gapless run of events.
        assert_gapless(session_events(customer, sid), cust_last + 1)
        assert_gapless(session_events(notary, sid), notary_last + 1)
        del assigned
    finally:
        await cl.close()

    conn = await asyncpg.connect(database)
    try:
        names = [
            r["name"]
            for r in await conn.fetch(
                "SELECT name FROM journal WHERE actor_id = $1 ORDER BY seq", f"session:{sid}"
            )
        ]
        states = [
            r["s"]
            for r in await conn.fetch(
                "SELECT data->>'state' AS s FROM journal WHERE actor_id = $1"
                " AND name = 'session.state' ORDER BY seq",
                f"session:{sid}",
            )
        ]
    finally:
        await conn.close()
    assert states == HAPPY_STATES
    # Nothing acknowledged was lost, nothing retried was applied twice.
    assert names.count("checks.recorded") == 1
    assert names.count("act.signed") == 1
    assert names.count("act.sealed") == 1

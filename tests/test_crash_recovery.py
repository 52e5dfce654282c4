"""Done-when 2: the server process is SIGKILLed at several points of a session
and restarted on the same database. Clients re-join with `since_seq`, get
exactly the events they missed, finish the session; no acknowledged request
is lost and a retried request is not applied twice."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.auth import mint_token
from gateway.client import EnfClient
from tests.conftest import JWT_SECRET
from tests.flows import HAPPY_STATES, PH, assert_gapless, doc, session_events
from tests.server_process import ServerProcess, server_env

pytestmark = pytest.mark.slow


def _tok(sub: str, role: str) -> str:
    return mint_token(JWT_SECRET, sub, role, kyc=True)


class Cluster:
    """One server process that the test kills and restarts."""

    def __init__(self, database: str, tmp_path) -> None:
        self.env = server_env(
            database,
            tmp_path,
            ENF_HOST="127.0.0.1",
            ENF_LOG_FORMAT="json",
            ENF_RECONNECT_GRACE_S="30",
        )
        self.log = tmp_path / "server.log"
        self.proc: ServerProcess | None = None
        self.clients: list[EnfClient] = []

    async def start(self) -> None:
        self.proc = ServerProcess(self.env, self.log)
        await self.proc.start()

    async def crash_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait_dead()
        for c in self.clients:
            await c.wait(lambda c=c: c.closed.is_set(), 10)
            await c.close()
        self.clients.clear()
        await self.start()

    async def client(self, sub: str, role: str) -> EnfClient:
        assert self.proc is not None
        c = EnfClient(self.proc.ws_url, _tok(sub, role))
        await c.connect()
        self.clients.append(c)
        return c

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        if self.proc is not None:
            await self.proc.stop()


def _last_seq(c: EnfClient, sid: str) -> int:
    evs = session_events(c, sid)
    return evs[-1]["seq"] if evs else 0


async def test_kill_at_three_points_and_finish(database, tmp_path):
    cl = Cluster(database, tmp_path)
    await cl.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for nid in ("n1",):
                async with http.put(
                    cl.proc.base_url + f"/v1/notaries/{nid}",
                    json={
                        "name": "Atty. One",
                        "tariff": 300.0,
                        "rating": 4.5,
                        "commission_expires": "2031-01-01",
                    },
                    headers={"Authorization": f"Bearer {_tok('root', 'admin')}"},
                ) as r:
                    assert r.status == 200

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
        await notary.call(
            "checks.record",
            {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": True},
            id="chk-1",
        )
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
        assert (
            await notary.call(
                "checks.record",
                {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": True},
                id="chk-1",
            )
            == {}
        )
        assert (
            await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"}, id="sign-1")
            == {}
        )
        await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
        await notary.call("video.end", {"session_id": sid})
        await notary.call("session.notarize", {"session_id": sid})
        await customer.expect("session.notarized")
        await customer.call("session.distribute", {"session_id": sid, "recipients": []})
        await customer.expect("session.state", state="COMPLETED")
        await notary.expect("session.state", state="COMPLETED")

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

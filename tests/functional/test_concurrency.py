"""Done-when 3: 50 customers request at once with 10 notaries online. No notary
is offered or assigned two sessions at once, no session gets two notaries,
and every session is assigned as notaries finish."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
from enf_client import EnfClient

from tests.conftest import Harness
from tests.flows import PH, online_notary, passed_checks, request_session, user_id

CUSTOMERS, NOTARIES = 50, 10

Log = list[tuple[str, str, str]]


async def _notary_loop(n: EnfClient, done: asyncio.Event, log: Log) -> None:
    """Take offers one at a time and run each session through NOTARIZED."""
    while not done.is_set():
        try:
            offer = await n.expect("offer", timeout=0.5)
        except TimeoutError:
            continue
        oid, sid = offer["data"]["offer_id"], offer["data"]["session_id"]
        log.append(("offer", user_id(n), sid))
        await n.call("offer.accept", {"offer_id": oid})
        await n.call("session.join", {"session_id": sid, "location": PH})
        await n.expect("participant.joined", topic=f"session:{sid}", role="customer", timeout=30)
        await n.call("video.start", {"session_id": sid})
        await n.call("checks.record", passed_checks(sid))
        await n.expect("act.signed", topic=f"session:{sid}", timeout=30)
        await n.call("act.seal", {"session_id": sid, "signature": "s", "seal": "t"})
        await n.call("video.end", {"session_id": sid})
        await n.call("session.notarize", {"session_id": sid})
        await n.expect("session.state", topic=f"session:{sid}", state="NOTARIZED", timeout=30)
        log.append(("done", user_id(n), sid))


async def _customer(c: EnfClient, i: int) -> str:
    sid = await request_session(c, f"k{i}", i)
    await c.expect("session.state", state="ENP_ASSIGNED", timeout=120)
    await c.call(
        "session.join",
        {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH},
    )
    await c.expect("session.state", state="VIDEO_IN_PROGRESS", timeout=30)
    await c.call("act.sign", {"session_id": sid, "signature": f"sig{i}"})
    await c.expect("session.state", state="NOTARIZED", timeout=30)
    return sid


async def test_fifty_customers_ten_notaries(server: Harness, database: str) -> None:
    notaries = [
        await online_notary(server, f"n{j:02d}", rating=3 + (j % 3)) for j in range(NOTARIES)
    ]
    customers = [await server.client(f"c{i:02d}", "customer") for i in range(CUSTOMERS)]
    done, log = asyncio.Event(), Log()
    workers = [asyncio.create_task(_notary_loop(n, done, log)) for n in notaries]
    sids = await asyncio.wait_for(
        asyncio.gather(*(_customer(c, i) for i, c in enumerate(customers))), 240
    )
    done.set()
    await asyncio.gather(*workers)

    assert len(set(sids)) == CUSTOMERS
    # What each notary saw: offers strictly one at a time, each finished before the next.
    for n in notaries:
        nid = user_id(n)
        mine = [(kind, sid) for kind, who, sid in log if who == nid]
        for (k1, s1), (k2, s2) in itertools.pairwise(mine):
            assert (k1, k2) != ("offer", "offer"), f"{nid} held two offers: {s1}, {s2}"
            if k1 == "offer":
                assert (k2, s2) == ("done", s1)

    conn = await asyncpg.connect(database)
    try:
        # No session got two notaries.
        rows = await conn.fetch(
            "SELECT actor_id, count(*) AS n FROM journal WHERE name = 'session.state'"
            " AND data->>'state' = 'ENP_ASSIGNED' GROUP BY actor_id"
        )
        assert len(rows) == CUSTOMERS and all(r["n"] == 1 for r in rows)
        # No notary had two sessions at once: assignment intervals do not overlap.
        spans = await conn.fetch(
            "SELECT a.data->>'enp_id' AS enp, a.at AS start, b.at AS stop FROM journal a"
            " JOIN journal b ON a.actor_id = b.actor_id AND b.name = 'session.state'"
            " AND b.data->>'state' = 'NOTARIZED'"
            " WHERE a.name = 'session.state' AND a.data->>'state' = 'ENP_ASSIGNED'"
            " ORDER BY enp, start"
        )
        assert len(spans) == CUSTOMERS
        for prev, cur in itertools.pairwise(spans):
            if prev["enp"] == cur["enp"]:
                assert cur["start"] >= prev["stop"], (prev, cur)
        # No notary ever held two open offers (the unique index would have refused it),
        # and every offer was resolved.
        assert await conn.fetchval("SELECT count(*) FROM offers WHERE state = 'open'") == 0
        assert {r["enp"] for r in spans} == {f"n{j:02d}" for j in range(NOTARIES)}
    finally:
        await conn.close()

"""The HTTP API of PROTOCOL §6 (this issue's part)."""

from __future__ import annotations

import aiohttp

from persistence.journal import GENESIS_HASH, chain_hash
from tests.conftest import Harness
from tests.flows import assigned_session, bearer, get_json


async def test_health_and_ready(server: Harness) -> None:
    assert await get_json(server, "/health") == (200, {"status": "ok"})
    status, body = await get_json(server, "/ready")
    assert status == 200 and body["checks"] == {"database": "ok"}


async def test_session_snapshot_list_and_journal(server: Harness) -> None:
    _customer, _notary, sid = await assigned_session(server)
    admin = server.token("ops", "admin")
    status, snap = await get_json(server, f"/v1/sessions/{sid}", server.token("c1", "customer"))
    assert status == 200
    assert {
        "session_id",
        "state",
        "customer_id",
        "enp_id",
        "document",
        "amount",
        "platform_fee",
        "enp_fee",
        "participants",
        "checks",
        "recording",
        "envelope_id",
        "created_at",
        "seq",
    } <= snap.keys()
    assert snap["state"] == "ENP_ASSIGNED" and snap["seq"] == 2

    status, listed = await get_json(server, "/v1/sessions?state=ENP_ASSIGNED", admin)
    assert status == 200 and [s["session_id"] for s in listed["sessions"]] == [sid]
    assert (await get_json(server, "/v1/sessions?state=REQUESTED", admin))[1] == {"sessions": []}
    assert (await get_json(server, "/v1/sessions?state=BOGUS", admin))[0] == 400
    assert (await get_json(server, "/v1/sessions", server.token("c1", "customer")))[0] == 403
    assert (await get_json(server, "/v1/sessions"))[0] == 401

    status, journal = await get_json(
        server, f"/v1/sessions/{sid}/journal", server.token("n1", "enp")
    )
    assert status == 200 and journal["session_id"] == sid
    prev = GENESIS_HASH
    for e in journal["events"]:
        assert e["prev_hash"] == prev
        assert e["hash"] == chain_hash(
            prev, f"session:{sid}", e["seq"], e["name"], e["data"], e["at"]
        )
        prev = e["hash"]
    assert [e["seq"] for e in journal["events"]] == [1, 2]
    # A stranger sees nothing, and learns nothing.
    assert (await get_json(server, f"/v1/sessions/{sid}/journal", server.token("c9", "customer")))[
        0
    ] == 404
    assert (await get_json(server, "/v1/sessions/not-a-uuid", admin))[0] == 404


async def test_profile_and_favorites_validation(server: Harness) -> None:
    admin = bearer(server.token("ops", "admin"))
    cust = bearer(server.token("c1", "customer"))
    async with aiohttp.ClientSession() as http:
        async with http.put(server.url("/v1/notaries/n1"), json={"rating": 9}, headers=admin) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
        async with http.put(server.url("/v1/notaries/n1"), data=b"{nope", headers=admin) as r:
            assert r.status == 400
        async with http.put(server.url("/v1/notaries/n1"), json={"rating": 4}, headers=cust) as r:
            assert r.status == 403
        async with http.put(
            server.url("/v1/customers/c2/favorites"), json={"notary_ids": ["n1"]}, headers=cust
        ) as r:
            assert r.status == 403
        async with http.put(
            server.url("/v1/customers/c1/favorites"), json={"notary_ids": "n1"}, headers=cust
        ) as r:
            assert r.status == 400
        async with http.put(
            server.url("/v1/customers/c1/favorites"),
            json={"notary_ids": ["n1", "n1", "n2"]},
            headers=admin,
        ) as r:
            assert r.status == 200 and (await r.json())["notary_ids"] == ["n1", "n2"]

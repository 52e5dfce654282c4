"""The HTTP API of PROTOCOL §6 (this issue's part)."""

from __future__ import annotations

from persistence.journal import GENESIS_HASH, chain_hash
from tests.conftest import Harness
from tests.flows import assigned_session, get_json, http_call


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
    admin = server.token("ops", "admin")
    cust = server.token("c1", "customer")
    status, body = await http_call(server, "PUT", "/v1/notaries/n1", admin, json={"rating": 9})
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await http_call(server, "PUT", "/v1/notaries/n1", admin, data=b"{nope")
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await http_call(server, "PUT", "/v1/notaries/n1", cust, json={"rating": 4})
    assert status == 403 and body["error"]["code"] == "forbidden"
    favorites = "/v1/customers/{}/favorites"
    status, body = await http_call(
        server, "PUT", favorites.format("c2"), cust, json={"notary_ids": ["n1"]}
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await http_call(
        server, "PUT", favorites.format("c1"), cust, json={"notary_ids": "n1"}
    )
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await http_call(
        server, "PUT", favorites.format("c1"), admin, json={"notary_ids": ["n1", "n1", "n2"]}
    )
    assert status == 200 and body["notary_ids"] == ["n1", "n2"]

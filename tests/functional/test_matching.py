"""Matching against the real server (shared/MATCHING.md): ranked lists,
favorites, offers, expiry, TTL, preferences. The score by hand: tests/unit."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import Harness, MakeServer
from tests.flows import (
    ADMIN,
    CEBU,
    MANILA,
    doc,
    http_call,
    online_notary,
    put_notary,
    request_session,
)


async def test_notaries_available_ranks_with_favorites(server: Harness) -> None:
    await online_notary(server, "n-a", rating=5, avg_response_time_s=0, tariff=500, location=MANILA)
    await online_notary(
        server,
        "n-b",
        rating=2.5,
        avg_response_time_s=150,
        tariff=1000,
        specializations=[],
        location=CEBU,
    )
    customer = await server.client("c1", "customer")
    query = {"document_type": "affidavit", "price_preference": 500.0, "location": MANILA}
    got = (await customer.call("notaries.available", query))["notaries"]
    assert [n["notary_id"] for n in got] == ["n-a", "n-b"]
    assert got[0]["score"] == pytest.approx(0.85) and got[1]["score"] == pytest.approx(0.45)
    assert got[0]["name"] == "Atty. n-a" and got[0]["status"] == "available"
    # Favorites (set by the customer itself) add 0.15.
    status, body = await http_call(
        server,
        "PUT",
        "/v1/customers/c1/favorites",
        server.token("c1", "customer"),
        json={"notary_ids": ["n-b"]},
    )
    assert status == 200, body
    got = (await customer.call("notaries.available", query))["notaries"]
    assert got[1]["score"] == pytest.approx(0.60)
    # A notary only an admin could ask about: the favorites term is 0 for admins.
    admin = await server.client(ADMIN, "admin")
    got = (await admin.call("notaries.available", query))["notaries"]
    assert [n["score"] for n in got] == pytest.approx([0.85, 0.45])


async def test_busy_notaries_are_not_listed(server: Harness) -> None:
    n = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")
    await request_session(customer)
    await n.expect("offer")
    assert (await customer.call("notaries.available"))["notaries"] == []


async def test_preferred_notary_is_offered_first(server: Harness) -> None:
    await online_notary(server, "n-top", rating=5)
    low = await online_notary(server, "n-low", rating=1)
    customer = await server.client("c1", "customer")
    await customer.call(
        "session.request",
        {"idempotency_key": "k", "document": doc(), "preferred_notary_id": "n-low"},
    )
    offer = await low.expect("offer")
    assert offer["data"]["document_type"] == "affidavit"


async def test_offer_expiry_cascades_and_updates_response_average(
    make_server: MakeServer, database: str
) -> None:
    server = await make_server(offer_timeout_s=0.4)
    first = await online_notary(server, "n1", rating=5, avg_response_time_s=10)
    second = await online_notary(server, "n2", rating=1)
    customer = await server.client("c1", "customer")
    sid = await request_session(customer)
    offer = await first.expect("offer", session_id=sid)
    await first.expect("offer.expired", offer_id=offer["data"]["offer_id"], timeout=5)
    offer2 = await second.expect("offer", session_id=sid, timeout=5)
    await second.call("offer.accept", {"offer_id": offer2["data"]["offer_id"]})
    await customer.expect("session.state", state="ENP_ASSIGNED")
    # The expired notary was not offered the same session again.
    assert len([e for e in first.events if e["name"] == "offer"]) == 1
    conn = await asyncpg.connect(database)
    try:
        avg = await conn.fetchval("SELECT live_avg_response_s FROM notaries WHERE notary_id = 'n1'")
        states = dict(await conn.fetch("SELECT notary_id, state FROM offers"))
    finally:
        await conn.close()
    assert avg == pytest.approx(0.8 * 10 + 0.2 * 0.4)  # an expiry counts the whole timeout
    assert states == {"n1": "expired", "n2": "accepted"}


async def test_request_ttl_cancels_with_no_notary(make_server: MakeServer) -> None:
    server = await make_server(request_ttl_s=0.5, offer_timeout_s=30)
    n = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")
    await request_session(customer)
    offer = await n.expect("offer")
    cancelled = await customer.expect("session.state", state="CANCELLED", timeout=5)
    assert cancelled["data"]["reason"] == "no_notary" and cancelled["data"]["by"] == "system"
    # The open offer is withdrawn, and the notary is free again.
    await n.expect("offer.withdrawn", offer_id=offer["data"]["offer_id"])
    await customer.wait(lambda: True)
    reply = await customer.request("notaries.available")
    assert [x["notary_id"] for x in reply["data"]["notaries"]] == ["n1"]


async def test_expired_commission_cannot_go_online(server: Harness) -> None:
    await put_notary(server, "n-old", commission_expires="2020-01-01")
    n = await server.client("n-old", "enp")
    assert (await n.request("presence.online"))["error"]["code"] == "forbidden"
    await put_notary(server, "n-claim")
    n2 = await server.client("n-claim", "enp", commission_expires="2021-06-30")
    assert (await n2.request("presence.online"))["error"]["code"] == "forbidden"


async def test_same_key_same_session_other_document_conflicts(server: Harness) -> None:
    customer = await server.client("c1", "customer")
    a = await customer.call("session.request", {"idempotency_key": "same", "document": doc(1)})
    b = await customer.call("session.request", {"idempotency_key": "same", "document": doc(1)})
    assert a == b
    r = await customer.request("session.request", {"idempotency_key": "same", "document": doc(2)})
    assert r["error"]["code"] == "conflict"
    # The key is scoped to the customer: another customer's same key is another session.
    other = await server.client("c2", "customer")
    c = await other.call("session.request", {"idempotency_key": "same", "document": doc(1)})
    assert c["session_id"] != a["session_id"]

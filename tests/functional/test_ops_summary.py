"""`GET /v1/ops/summary` (admins): the queue (requests waiting, offers open,
notaries online, match latency), sessions by state, and `cluster: null` on a
single node. (Cluster mode: tests/cluster/test_cluster_ops_summary.py.)"""

from __future__ import annotations

from typing import Any

from tests.conftest import Harness
from tests.flows import accept_next_offer, http_call, online_notary, request_session

ADMIN = "ops"


async def summary(h: Harness) -> dict[str, Any]:
    status, body = await http_call(h, "GET", "/v1/ops/summary", h.token(ADMIN, "admin"))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def test_the_summary_follows_the_queue_and_the_sessions(server: Harness) -> None:
    empty = await summary(server)
    assert empty["cluster"] is None
    assert set(empty["sessions_by_state"].values()) == {0} and len(empty["sessions_by_state"]) == 10
    assert empty["queue"]["requests_waiting"] == 0 and empty["queue"]["oldest_request_s"] is None
    assert empty["queue"]["match_latency"]["count"] == 0
    assert empty["queue"]["match_latency"]["median_s"] is None

    # A request with no notary online waits.
    customer = await server.client("c1", "customer")
    sid = await request_session(customer)
    waiting = await summary(server)
    q = waiting["queue"]
    assert q["requests_waiting"] == 1 and q["oldest_request_s"] >= 0
    assert q["offers_open"] == 0
    assert q["notaries_online"] == {"available": 0, "away": 0, "busy": 0}
    assert waiting["sessions_by_state"]["REQUESTED"] == 1

    # A notary comes online: an offer is open, then accepted.
    notary = await online_notary(server, "n1")
    offer = await notary.expect("offer", session_id=sid)
    offered = await summary(server)
    assert offered["queue"]["offers_open"] == 1
    assert offered["queue"]["notaries_online"]["busy"] == 1  # it holds the offer
    await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    await customer.expect("session.state", state="ENP_ASSIGNED")
    assigned = await summary(server)
    q = assigned["queue"]
    assert q["requests_waiting"] == 0 and q["offers_open"] == 0
    latency = q["match_latency"]
    assert latency["count"] == 1 and latency["window_s"] == 3600
    assert 0 <= latency["median_s"] == latency["max_s"] < 30
    assert assigned["sessions_by_state"]["ENP_ASSIGNED"] == 1
    assert assigned["sessions_by_state"]["REQUESTED"] == 0

    # A second request, matched again: two assignments in the window.
    c2 = await server.client("c2", "customer")
    await notary.call("session.cancel", {"session_id": sid, "reason": "test: free the notary"})
    await request_session(c2, key="k2", n=2)
    await accept_next_offer(notary, c2)
    after = await summary(server)
    assert after["queue"]["match_latency"]["count"] == 2
    assert after["sessions_by_state"]["CANCELLED"] == 1
    assert after["sessions_by_state"]["ENP_ASSIGNED"] == 1


async def test_only_admins_read_the_summary(server: Harness) -> None:
    for who, role in (("c1", "customer"), ("n1", "enp")):
        status, body = await http_call(server, "GET", "/v1/ops/summary", server.token(who, role))
        assert status == 403 and body["error"]["code"] == "forbidden", body
    status, body = await http_call(server, "GET", "/v1/ops/summary")
    assert status == 401 and body["error"]["code"] == "unauthorized", body

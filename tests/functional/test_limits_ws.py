"""Issue 13, class 7 (PROTOCOL §8 Limits), over WebSockets:

- at most ENF_MAX_CONNECTIONS_PER_USER open sockets per user: one more is
  refused with HTTP 429 on the upgrade (header token), or closed with 4429
  right after a `hello` (the token only arrives then);
- at most ENF_MAX_OPEN_REQUESTS sessions in REQUESTED per customer: one more
  `session.request` is `rate_limited`, a repeat is still a repeat, the count
  holds across a restart and two requests at once cannot both pass;
- refused frames leave a few audit rows and then one summary row;
- a request naming an id that does not exist leaves no lock behind.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from enf_client import EnfClient, RequestFailed

from tests.conftest import Harness, MakeServer
from tests.flows import bearer, doc, eventually, get_json


async def refusals(server: Harness, limit: str) -> float:
    """`enf_limit_refusals_total{limit=...}` as `/metrics` shows it."""
    status, text = await get_json(server, "/metrics")
    assert status == 200 and isinstance(text, str)
    prefix = f'enf_limit_refusals_total{{limit="{limit}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


# -- connections per user ----------------------------------------------------------------


async def test_one_connection_too_many_is_refused_with_429(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_user=2)
    first = await server.client("c1", "customer")
    await server.client("c1", "customer")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.ws_url, headers=bearer(server.token("c1", "customer")))
        assert err.value.status == 429
        async with http.get(
            server.ws_url.replace("ws://", "http://"),
            headers={**bearer(server.token("c1", "customer")), "Upgrade": "websocket"},
        ) as r:
            assert r.status == 429
            assert (await r.json())["error"]["code"] == "rate_limited"
    assert await refusals(server, "ws_connections_per_user") == 2
    # Another user is not concerned; a closed socket gives its slot back.
    await server.client("c2", "customer")
    await first.close()
    await eventually(lambda: len(server.connections_of("c1")) == 1)
    await eventually(lambda: server.services.limits.connections_of("c1") == 1)
    third = await server.client("c1", "customer")
    assert "server_time" in await third.call("ping")


async def test_one_connection_too_many_by_hello_is_closed_with_4429(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections_per_user=1)
    await server.client("c1", "customer")
    late = EnfClient(server.ws_url, server.token("c1", "customer"), hello=True)
    server.every_client.append(late)
    try:
        with pytest.raises(ConnectionError):
            await late.connect()
    finally:
        await late.close()
    assert late.close_code == 4429
    assert len(server.connections_of("c1")) == 1
    assert await refusals(server, "ws_connections_per_user") == 1


# -- open requests per customer ------------------------------------------------------------


def _request(key: str, n: int = 1) -> dict[str, Any]:
    return {"idempotency_key": key, "document": doc(n)}


async def _refused_code(c: EnfClient, data: dict[str, Any]) -> str:
    with pytest.raises(RequestFailed) as err:
        await c.call("session.request", data)
    return err.value.code


async def test_open_requests_per_customer(make_server: MakeServer) -> None:
    first = await make_server(max_open_requests=2)
    c = await first.client("c1", "customer")
    one = (await c.call("session.request", _request("k1")))["session_id"]
    await c.call("session.request", _request("k2", 2))
    assert await _refused_code(c, _request("k3", 3)) == "rate_limited"
    # A repeat of an existing request is answered as a repeat.
    again = await c.call("session.request", _request("k1"))
    assert again == {"session_id": one, "state": "REQUESTED"}
    # Another customer has its own count.
    other = await first.client("c2", "customer")
    await other.call("session.request", _request("k1"))
    assert await refusals(first, "open_requests") == 1
    # After a restart the count still holds (it is read from Postgres).
    await first.close_clients()
    await first.server.close()
    second = await make_server(max_open_requests=2)
    c = await second.client("c1", "customer")
    assert await _refused_code(c, _request("k3", 3)) == "rate_limited"
    await c.call("session.cancel", {"session_id": one, "reason": "changed my mind"})
    await c.call("session.request", _request("k3", 3))
    assert await _refused_code(c, _request("k4", 4)) == "rate_limited"


async def test_two_requests_at_once_do_not_both_pass_the_limit(make_server: MakeServer) -> None:
    server = await make_server(max_open_requests=3)
    a = await server.client("c1", "customer")
    b = await server.client("c1", "customer")
    await a.call("session.request", _request("k1"))
    await a.call("session.request", _request("k2", 2))
    for round_ in range(3):
        replies = await asyncio.gather(
            a.request("session.request", _request(f"a{round_}", 10 + round_)),
            b.request("session.request", _request(f"b{round_}", 20 + round_)),
        )
        oks = [r for r in replies if r["ok"]]
        assert len(oks) == (1 if round_ == 0 else 0), replies
        assert all(r["error"]["code"] == "rate_limited" for r in replies if not r["ok"])
    assert server.services.limits.customers_waiting() == 0


# -- audit rows of refusals ----------------------------------------------------------------


async def test_a_flood_of_refused_frames_leaves_a_summary_row(
    make_server: MakeServer, database: str
) -> None:
    server = await make_server(audit_refusals_burst=3, audit_refusals_interval_s=3600)
    c = await server.client("c-flood", "customer")
    assert c.ws is not None
    for _ in range(40):
        await c.ws.send_str("{not json")
    await c.wait(lambda: len(c.orphan_replies) >= 40)
    await c.call("notaries.available", {})  # a legitimate request
    await c.close()
    await eventually(lambda: not server.connections_of("c-flood"))
    await server.services.audit.flush()
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT action, outcome, error_code, metadata FROM audit_log"
            " WHERE user_id = $1 ORDER BY id",
            "c-flood",
        )
    finally:
        await conn.close()
    refused = [r for r in rows if r["outcome"] == "refused"]
    assert [r["action"] for r in refused] == ["frame"] * 3 + ["refusals"]
    meta = refused[-1]["metadata"]
    summary = json.loads(meta) if isinstance(meta, str) else meta
    assert summary["suppressed"] == 37 and summary["codes"] == {"bad_request": 37}
    assert [r["action"] for r in rows if r["outcome"] == "ok"] == ["notaries.available"]
    status, text = await get_json(server, "/metrics")
    assert status == 200 and "enf_audit_refusals_suppressed_total 37.0" in text


# -- per-actor locks of a connection ---------------------------------------------------------


async def test_not_found_lookups_leave_no_lock_behind(server: Harness) -> None:
    c = await server.client("c1", "customer")
    replies = await asyncio.gather(
        *(c.request("session.join", {"session_id": str(uuid.uuid4())}) for _ in range(60))
    )
    assert all(not r["ok"] and r["error"]["code"] == "not_found" for r in replies)
    [conn] = server.connections_of("c1")
    assert len(conn.locks) == 0
    assert not conn.following.follows
    # The connection still serialises per actor and answers.
    assert "server_time" in await c.call("ping")

"""Issue 17: the limits of PROTOCOL §8 that answer HTTP 429, at the
contract's default values (no setting overridden): authenticated HTTP calls
(50/s, bursts of 100) get 429 with `Retry-After`; unauthenticated calls per
IP (120/minute) get 429 and never a valid token; the 21st WebSocket of one
user is refused with HTTP 429 on the upgrade; a sixth open request of one
customer is `rate_limited`. (How the limits are tuned: test_limits_*.py.)"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from enf_client import EnfClient

from tests.conftest import Harness
from tests.flows import ADMIN, bearer, doc


async def _statuses(
    h: Harness, path: str, n: int, token: str | None = None
) -> list[tuple[int, str | None, str]]:
    """`n` GETs of `path` at once on one session: (status, Retry-After, error code)."""
    headers = bearer(token) if token else {}

    async def one(http: aiohttp.ClientSession) -> tuple[int, str | None, str]:
        async with http.get(h.url(path), headers=headers) as r:
            code = ""
            if r.status >= 400:
                code = (await r.json())["error"]["code"]
            else:
                await r.read()
            return r.status, r.headers.get("Retry-After"), code

    async with aiohttp.ClientSession() as http:
        return list(await asyncio.gather(*(one(http) for _ in range(n))))


async def test_authenticated_http_calls_past_the_burst_get_429(server: Harness) -> None:
    got = await _statuses(server, "/v1/keys", 130, server.token(ADMIN, "admin"))
    ok = [g for g in got if g[0] == 200]
    limited = [g for g in got if g[0] == 429]
    assert len(ok) + len(limited) == len(got), got
    assert 100 <= len(ok) < 130 and limited, (len(ok), len(limited))
    assert all(code == "rate_limited" and int(retry or 0) >= 1 for _, retry, code in limited)
    # Another user has its own allowance.
    assert (await _statuses(server, "/v1/keys", 1, server.token("ops-2", "admin")))[0][0] == 200


async def test_unauthenticated_calls_per_address_get_429_but_a_valid_token_does_not(
    server: Harness,
) -> None:
    got = await _statuses(server, "/v1/keys", 130)
    assert [s for s, _, _ in got].count(200) == 120, got
    limited = [g for g in got if g[0] == 429]
    assert len(limited) == 10 and all(c == "rate_limited" and r for _, r, c in limited)
    # The same address with a valid token is served.
    assert (await _statuses(server, "/v1/keys", 1, server.token("c1", "customer")))[0][0] == 200


async def test_the_21st_websocket_of_a_user_is_refused_with_429(server: Harness) -> None:
    for _ in range(20):
        await server.client("c1", "customer")
    token = server.token("c1", "customer")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.ws_url, headers=bearer(token))
        assert refused.value.status == 429
    # Someone else still connects, and so does c1 once one socket is closed.
    assert "server_time" in await (await server.client("c2", "customer")).call("ping")
    await server.clients[0].close()
    again = EnfClient(server.ws_url, token)
    await again.connect()
    try:
        assert "server_time" in await again.call("ping")
    finally:
        await again.close()


async def test_a_sixth_open_request_is_rate_limited(server: Harness) -> None:
    customer = await server.client("c1", "customer")
    for i in range(5):
        body = {"idempotency_key": f"k{i}", "document": doc(i)}
        assert (await customer.call("session.request", body))["state"] == "REQUESTED"
    r = await customer.request("session.request", {"idempotency_key": "k5", "document": doc(5)})
    assert r["ok"] is False and r["error"]["code"] == "rate_limited", r
    # A repeat of an open one is answered as a repeat.
    again = await customer.call("session.request", {"idempotency_key": "k0", "document": doc(0)})
    assert again["state"] == "REQUESTED"

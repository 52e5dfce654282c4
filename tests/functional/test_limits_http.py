"""Issue 13, class 7 (PROTOCOL §8 Limits), over HTTP:

- authenticated calls: ENF_HTTP_USER_RATE_LIMIT per second per user (bursts
  of twice that), then 429 with Retry-After;
- per IP address, unauthenticated requests and failed authentications (HTTP
  and WebSocket): ENF_ANON_RATE_LIMIT per minute, then 429 with Retry-After
  (4429 after a refused `hello`); a valid token is never refused for it;
- the probes (`/health`, `/ready`, `/metrics`) are not limited;
- a client that sends a request's head too slowly is dropped after
  ENF_HEADER_TIMEOUT_S (a WebSocket that is open is not).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.conftest import Harness, MakeServer
from tests.flows import bearer, get_json


async def _get(server: Harness, path: str, token: str | None = None) -> tuple[int, str | None, str]:
    """Status, Retry-After and the error code (or "") of GET `path`."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url(path), headers=bearer(token) if token else {}) as r,
    ):
        body = await r.read()
        code = ""
        if r.status >= 400 and r.content_type == "application/json":
            code = json.loads(body)["error"]["code"]
        return r.status, r.headers.get("Retry-After"), code


async def _refusals(server: Harness, limit: str) -> float:
    status, text = await get_json(server, "/metrics")
    assert status == 200 and isinstance(text, str)
    prefix = f'enf_limit_refusals_total{{limit="{limit}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_authenticated_calls_per_user(make_server: MakeServer) -> None:
    server = await make_server(http_user_rate_limit=2)  # bursts of 4
    ops = server.token("ops", "admin")
    statuses = [(await _get(server, "/v1/sessions", ops))[0] for _ in range(4)]
    assert statuses == [200] * 4
    status, retry_after, code = await _get(server, "/v1/sessions", ops)
    assert (status, code) == (429, "rate_limited")
    assert retry_after is not None and int(retry_after) >= 1
    # Another user has its own bucket; the probes are never limited.
    assert (await _get(server, "/v1/sessions", server.token("ops2", "admin")))[0] == 200
    for path in ("/health", "/ready", "/metrics") * 5:
        assert (await _get(server, path))[0] == 200
    assert await _refusals(server, "http_user_rate") == 1


async def test_unauthenticated_requests_per_address(make_server: MakeServer) -> None:
    server = await make_server(anon_rate_limit=3)
    statuses = [(await _get(server, "/v1/keys"))[0] for _ in range(3)]
    assert statuses == [200] * 3
    status, retry_after, code = await _get(server, "/v1/keys")
    assert (status, code) == (429, "rate_limited")
    assert retry_after is not None and int(retry_after) >= 1
    # A valid token from the same address is not refused; nor are the probes.
    customer = server.token("c1", "customer")
    assert (await _get(server, "/v1/keys", customer))[0] == 200
    assert (await _get(server, "/v1/sessions/none", customer))[0] == 404
    for path in ("/health", "/ready", "/metrics") * 5:
        assert (await _get(server, path))[0] == 200
    # Nor a WebSocket with a valid token, in the header or in `hello`.
    c = await server.client("c1", "customer")
    assert "server_time" in await c.call("ping")
    assert await _refusals(server, "anon_rate") == 1


async def test_failed_authentications_per_address(make_server: MakeServer) -> None:
    server = await make_server(anon_rate_limit=3)
    bad = server.token("c1", "customer") + "x"
    assert [(await _get(server, "/v1/sessions/s1", bad))[0] for _ in range(2)] == [401, 401]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.ws_url, headers=bearer(bad))
        assert err.value.status == 401  # the third failure: still answered 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.ws_url, headers=bearer(bad))
        assert err.value.status == 429
        # A refused `hello` counts too; past the limit it closes with 4429.
        ws = await http.ws_connect(server.ws_url, protocols=("enf.v1.json",))
        await ws.send_str(json.dumps({"type": "hello", "data": {"token": bad}}))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4429
    status, retry_after, code = await _get(server, "/v1/sessions/s1", bad)
    assert (status, code) == (429, "rate_limited") and retry_after is not None
    # The valid token of the same address still works, over HTTP and WebSocket.
    assert (await _get(server, "/v1/sessions/s1", server.token("c1", "customer")))[0] == 404
    hello = await server.client("c1", "customer")
    assert "server_time" in await hello.call("ping")
    assert await _refusals(server, "anon_rate") == 3


async def test_a_slow_request_head_is_dropped(make_server: MakeServer) -> None:
    server = await make_server(header_timeout_s=0.5)
    c = await server.client("c1", "customer")  # opened before: outlives the timeout
    reader, writer = await asyncio.open_connection(server.server.host, server.server.port)
    try:
        writer.write(b"GET /hea")  # half a request line, then nothing
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    finally:
        writer.close()
    assert "server_time" in await c.call("ping")
    # A whole request on a fresh connection is answered as usual.
    assert (await _get(server, "/health"))[0] == 200

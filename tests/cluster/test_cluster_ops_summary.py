"""`GET /v1/ops/summary` in cluster mode: the shards as the gateway sees them
(every 5 s, as /metrics does) with their state named as `run.py cluster
status` names it, and the live gateways of the Redis registry; the queue
and sessions by state read from the shared database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import MakeServer
from tests.flows import assigned_session, http_call

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


async def test_the_summary_shows_the_shards_and_the_gateways(
    make_cluster_server: MakeServer,
) -> None:
    h = await make_cluster_server()
    await assigned_session(h)
    latest: dict[str, Any] = {}

    async def read() -> dict[str, Any]:
        status, body = await http_call(h, "GET", "/v1/ops/summary", h.token("ops", "admin"))
        assert status == 200, body
        latest.update(body)
        return latest

    first = await read()
    assert first["sessions_by_state"]["ENP_ASSIGNED"] == 1
    assert first["queue"]["match_latency"]["count"] == 1
    assert first["queue"]["notaries_online"] == {"available": 0, "away": 0, "busy": 1}
    cluster = first["cluster"]
    assert cluster["shard_count"] == 2 and cluster["map_epoch"] >= 1
    assert [s["shard"] for s in cluster["shards"]] == [0, 1]
    assert {s["state"] for s in cluster["shards"]} == {"RUNNING"}, cluster
    assert cluster["errors"] == []

    # Within a look at the shards and a registry period: the actors hosted
    # (session, notary, matchmaker at least) and this gateway's two sockets.
    async def settled() -> bool:
        c = (await read())["cluster"]
        gateways = c["gateways"]
        return (
            sum(s["actors"] or 0 for s in c["shards"]) >= 3
            and len(gateways) == 1
            and gateways[0]["connections"] == 2
        )

    await eventually_async(settled, 20.0)
    (gateway,) = latest["cluster"]["gateways"]
    assert gateway["gateway_id"] == getattr(h.services.host, "gateway_id", None)
    assert gateway["seen_s_ago"] < 15


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll the coroutine function `check` until it answers True."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not true after {timeout} s"
        await asyncio.sleep(0.5)

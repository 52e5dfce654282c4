"""The chaos run with the server as a child process (`python run.py`): the
faults of tests/chaos/test_chaos_offers.py, plus SIGKILL of the server at
random moments, started again at once on the same port and database, and
SIGKILL of its recorder worker (ENF_RECORDING=optional). Clients
reconnect, re-join with `since_seq` and retry what was not answered by id;
the history checker then holds PROTOCOL §7 over the whole run: every
acknowledged request's effect is in the journal once, no `unavailable`
request's effect is, every stream is gapless and duplicate-free, no session
was assigned twice, every hash chain verifies, and every live session agrees
with its journal. No process logged an ERROR.

ENF_CHAOS_SEED replays the faults; ENF_CHAOS_SECONDS sets the length (45 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.checker import load_journal
from tests.chaos.history import History
from tests.chaos.test_chaos_offers import (
    REFUSED,
    Run,
    drive,
    notaries_free,
    server_view,
    verdict,
)
from tests.chaos.test_chaos_offers import seed as chaos_seed
from tests.conftest import free_port
from tests.functional.test_ops import scrape, value
from tests.pgproxy import TcpProxy
from tests.server_process import ServerProcess, server_env

pytestmark = [pytest.mark.chaos]


async def test_chaos_with_sigkills(
    database: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    seed = chaos_seed(record_property)
    async with TcpProxy.to_dsn(database) as proxy:
        env = server_env(
            proxy.dsn(database),
            tmp_path,
            ENF_PORT=str(free_port()),
            ENF_OFFER_TIMEOUT_S="5",
            ENF_LOG_LEVEL="INFO",
            # The recorder worker runs (a child process of the server), and is
            # SIGKILLed too; the act does not wait for it.
            ENF_RECORDING="optional",
        )
        server = ServerProcess(env, tmp_path / "server.log")
        await server.start()

        async def kill() -> None:
            server.kill()
            await server.wait_dead()
            await server.start()

        workers_killed: list[int] = []

        async def kill_recorder() -> None:
            """(After one, no worker runs until the server starts again.)"""
            assert server.proc is not None
            for pid in await asyncio.to_thread(recorder_workers, server.proc.pid):
                os.kill(pid, signal.SIGKILL)
                workers_killed.append(pid)

        run = Run(
            server,
            proxy,
            History(),
            random.Random(seed),
            kill=kill,
            hooks={"recorder kill": kill_recorder},
        )
        try:
            await drive(run)
            proxy.disarm()
            journal = await load_journal(database)
            await server_view(server, journal)
            disagree = await notaries_free(server, run.history, journal)
            refused = value(await scrape(server), REFUSED)
        finally:
            await server.close()
    errors = await asyncio.to_thread(server.error_lines)
    # A killed worker is an error the server must log; nothing else may be.
    unexpected = [e for e in errors if not WORKER_DIED.search(e)]
    assert len(errors) - len(unexpected) == len(workers_killed)
    assert workers_killed or not run.faults["recorder kill"], "no recorder worker to kill"
    verdict(run, seed, journal, unexpected, disagree, refused)


WORKER_DIED = re.compile(r"recorder worker \(pid \d+\) exited with -9")


def recorder_workers(server_pid: int) -> list[int]:
    """The server's recorder worker processes (`python -m media.recorder_worker`,
    children of the server), from /proc."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"media.recorder_worker" in cmdline:
            found.append(int(proc.name))
    return found

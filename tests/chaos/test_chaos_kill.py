"""The chaos run with the server as a child process (`python run.py`): the
faults of tests/chaos/test_chaos_offers.py, plus SIGKILL of the server at
random moments, started again at once on the same port and database. Clients
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
import random
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
        )
        server = ServerProcess(env, tmp_path / "server.log")
        await server.start()

        async def kill() -> None:
            server.kill()
            await server.wait_dead()
            await server.start()

        run = Run(server, proxy, History(), random.Random(seed), kill=kill)
        try:
            await drive(run)
            proxy.disarm()
            journal = await load_journal(database)
            await server_view(server, journal)
            disagree = await notaries_free(server, run.history, journal)
            refused = value(await scrape(server), REFUSED)
        finally:
            await server.close()
    verdict(run, seed, journal, await asyncio.to_thread(server.error_lines), disagree, refused)

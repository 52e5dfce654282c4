"""`python run.py` as a child process, for tests that kill or signal it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (http://\S+)")


def server_env(database: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test server process: this database, a free port,
    the tests' JWT key, no recording; `extra` adds or overrides."""
    from tests.conftest import JWT_SECRET

    return {
        "ENF_DATABASE_URL": database,
        "ENF_PORT": "0",
        "ENF_JWT_SECRET": JWT_SECRET,
        "ENF_RECORDING": "off",
        "ENF_DATA_DIR": str(data_dir),
        **extra,
    }


class ServerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/v1/ws"

    async def start(self, timeout: float = 60.0) -> str:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "run.py"),
            *self.args,
            cwd=str(ROOT),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        log.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(
                        f"server exited ({await self.proc.wait()}): "
                        f"{self.log_path.read_text()[-3000:]}"
                    )
                match = LISTENING.search(line.decode())
                if match:
                    self.base_url = match.group(1)
                    return self.base_url

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def wait_dead(self) -> Any:
        assert self.proc is not None
        return await self.proc.wait()

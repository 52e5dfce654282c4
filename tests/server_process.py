"""`python run.py` as a child process, for tests that kill or signal it, and
its other commands run to completion."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.served import JWT_SECRET, Served

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (http://\S+)")
# A console-format line at ERROR or worse: "<date> <time> ERROR   logger: message".
CONSOLE_ERROR = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ")


def is_error_line(line: str) -> bool:
    """Whether a line of a server's log (JSON or console format) is at ERROR or worse."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return isinstance(record, dict) and record.get("level") in ("error", "critical")
    return CONSOLE_ERROR.match(line) is not None


def server_env(database: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test server process: this database, a free port,
    the tests' JWT key, no recording; `extra` adds or overrides."""
    return {
        "ENF_DATABASE_URL": database,
        "ENF_PORT": "0",
        "ENF_JWT_SECRET": JWT_SECRET,
        "ENF_RECORDING": "off",
        "ENF_DATA_DIR": str(data_dir),
        **extra,
    }


def run_py(
    *args: str, env: Mapping[str, str], check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS` in the project's root with exactly `env`, to the
    end; its output as text. Blocks: from async code, in a thread."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


async def run_py_async(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> tuple[int | None, bytes, bytes]:
    """`python run.py ARGS` with `env` added to this environment, to the end:
    its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "run.py"),
        *args,
        cwd=str(ROOT),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out, err


class ServerProcess(Served):
    """One `python run.py` server; started again on the same log by `start()`."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self._base_url = ""

    @property
    def base_url(self) -> str:
        return self._base_url

    async def start(self, timeout: float = 60.0) -> str:
        # Opened and closed around the spawn only: the child keeps its own descriptor.
        log = await asyncio.to_thread(self.log_path.open, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "run.py"),
                *self.args,
                cwd=str(ROOT),
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        finally:
            log.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    code = await self.proc.wait()
                    log_text = await asyncio.to_thread(self.log_path.read_text)
                    raise RuntimeError(f"server exited ({code}): {log_text[-3000:]}")
                match = LISTENING.search(line.decode())
                if match:
                    self._base_url = match.group(1)
                    return self._base_url

    def error_lines(self) -> list[str]:
        """The ERROR lines of its log (read after the test: blocks)."""
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(errors="replace")
        return [
            f"{self.log_path.name}: {line}" for line in text.splitlines() if is_error_line(line)
        ]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def wait_dead(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def crash_and_restart(self) -> None:
        """SIGKILL; each client sees its connection end; a new process on
        the same database (the old clients are gone: connect new ones)."""
        self.kill()
        await self.wait_dead()
        for c in self.clients:
            await c.wait(lambda c=c: c.closed.is_set(), 10)
        await self.close_clients()
        await self.start()

    async def close(self, timeout: float = 15.0) -> None:
        """The clients, then the server (SIGTERM)."""
        await self.close_clients()
        await self.stop(timeout=timeout)

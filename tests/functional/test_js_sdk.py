"""The TypeScript client SDK (clients/js) against a real server: its own
tests (`npm test`: Node's test runner) get this server's URL and JWT key in
ENF_URL and ENF_JWT_SECRET, and cover a whole lifecycle in both
subprotocols, sockets cut mid-session (resumed with nothing lost or
doubled), a request retried by id after its reply was lost, tokens refreshed
before their `exp` and after a 4401, and that the committed generated types
(src/generated/contract.ts) and browser bundle (gateway/static/enf-sdk.js)
are what this server's /asyncapi.json and clients/js/src make now.

Node >= 20 and npm are required: without them this test fails, it does not
skip. `npm ci` runs first when clients/js/node_modules is missing."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from tests.conftest import Harness
from tests.served import JWT_SECRET

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
NPM_TIMEOUT_S = 600
SHOWN = 20_000  # characters of output shown when a command fails


async def _run(*command: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `command` in clients/js to the end: its exit code and output (both streams)."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=JS,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NPM_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _shown(output: str) -> str:
    return output if len(output) <= SHOWN else "…" + output[-SHOWN:]


async def test_js_sdk(server: Harness) -> None:
    node = await asyncio.to_thread(shutil.which, "node")
    npm = await asyncio.to_thread(shutil.which, "npm")
    assert node is not None and npm is not None, "the JS SDK's tests need node (>= 20) and npm"
    code, version = await _run(node, "--version")
    major = re.match(r"v(\d+)\.", version)
    assert code == 0 and major is not None and int(major.group(1)) >= 20, f"node {version}"

    if not await asyncio.to_thread((JS / "node_modules").is_dir):
        code, out = await _run(npm, "ci", "--no-audit", "--no-fund")
        assert code == 0, f"npm ci failed ({code}):\n{_shown(out)}"

    env = {**os.environ, "ENF_URL": server.base_url, "ENF_JWT_SECRET": JWT_SECRET}
    code, out = await _run(npm, "test", env=env)
    assert code == 0, f"npm test failed ({code}):\n{_shown(out)}"
    summary = re.search(r"^# pass (\d+)\n# fail (\d+)", out, re.MULTILINE)
    assert summary is not None, _shown(out)
    assert int(summary.group(1)) > 0 and int(summary.group(2)) == 0, _shown(out)

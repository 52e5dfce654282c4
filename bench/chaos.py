"""The long chaos run (issue 13): the two chaos tests of tests/chaos, each for
`--seconds` (default 600: 20 minutes in all), with a seed each, and their
figures printed as Markdown for bench/RESULTS.md.

    .venv/bin/python bench/chaos.py [--seconds 600] [--seed N]

Each test's own report (faults injected, frames, retries, reconnects, error
replies, sessions by state, violations: the run fails on any) is what is
printed; the exit status is non-zero if either run failed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = {
    "local host, Postgres faults": "tests/chaos/test_chaos_offers.py",
    "child process, Postgres faults and SIGKILLs": "tests/chaos/test_chaos_kill.py",
}
KEEP = re.compile(
    r"^(ENF_CHAOS_SEED=\d+:|faults:|frames:|sessions:|rounds that failed|server errors)"
)


def run(name: str, path: str, seconds: float, seed: int) -> tuple[bool, list[str], float]:
    env = {**os.environ, "ENF_CHAOS_SECONDS": str(seconds), "ENF_CHAOS_SEED": str(seed)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:randomly", path],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if KEEP.match(line)]
    if proc.returncode != 0:
        lines += proc.stdout.splitlines()[-40:]
    return proc.returncode == 0, lines, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    ok_all = True
    for name, path in TESTS.items():
        seed = args.seed if args.seed is not None else random.randrange(2**32)
        ok, lines, took = run(name, path, args.seconds, seed)
        ok_all = ok_all and ok
        print(f"### {name} ({path}): {'passed' if ok else 'FAILED'} in {took:.0f} s")
        print("```")
        print("\n".join(lines))
        print("```")
        sys.stdout.flush()
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())

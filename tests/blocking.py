"""The blockbuster net's settings (the autouse fixture in tests/conftest.py):
whose blocking calls count, and the few places allowed to block, each with
its reason. A library's gap stays here; a server fault stays until fixed."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import blockbuster.blockbuster
import pytest
from blockbuster import BlockBuster, BlockingError

# A blocking call counts when our code is on the stack (the server's packages
# and these tests), directly or through a library. A library blocking on its
# own, from its own callbacks or threads, is the library's business.
OUR_CODE = [
    "actors",
    "cluster",
    "config",
    "core",
    "delivery",
    "gateway",
    "media",
    "persistence",
    "tests",
]

# (file, functions in it, blockbuster's names of the calls allowed there, or
# None for any): a blocking call with such a function on the stack passes.
Allowance = tuple[str, set[str], tuple[str, ...] | None]

LIBRARY_GAPS: list[Allowance] = [
    # asyncpg reads libpq's files (~/.pgpass, ~/.postgresql/*) as it parses the
    # DSN, at every connect: a stat and a small read.
    ("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"}, None),
    # redis-py looks its own version up (importlib.metadata: a stat of each
    # sys.path entry) for every connection it makes (redis/driver_info.py).
    ("redis/utils.py", {"get_lib_version"}, None),
    # aiortc joins a receiver's decoder thread when the receiver stops
    # (RTCPeerConnection.close).
    (
        "aiortc/rtcrtpreceiver.py",
        {"__stop_decoder"},
        ("threading.Lock.acquire", "threading.Lock.acquire_lock"),
    ),
]

# Faults of the server this net finds, allowed here as narrowly as they allow
# until they are fixed (none now: the six it found are fixed).
KNOWN_SERVER_FAULTS: list[Allowance] = []


def allow(bb: BlockBuster, allowances: list[Allowance]) -> None:
    """Let each allowance's calls block in its functions."""
    for filename, functions, calls in allowances:
        for name in calls if calls is not None else list(bb.functions):
            bb.functions[name].can_block_in(filename, functions)


def _or_devnull(predicate: Callable[..., bool]) -> Callable[..., bool]:
    """A write to /dev/null never blocks: pytest's logging plugin keeps a
    file handler on it, and every record logged in a test goes there."""

    def can_block(file: Any, *args: Any, **kwargs: Any) -> bool:
        return getattr(file, "name", None) == os.devnull or predicate(file, *args, **kwargs)

    return can_block


ROOT = Path(__file__).resolve().parent.parent


def _our_caller() -> str:
    """file:line (function) of our code's innermost frame on the stack."""
    here = str(Path(__file__).resolve())
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(str(ROOT)) and ".venv" not in frame.filename:
            if frame.filename != here:
                where = Path(frame.filename).relative_to(ROOT)
                return f"{where}:{frame.lineno} ({frame.name})"
    return "a library's own code"


@contextmanager
def blockbuster_net() -> Iterator[list[str]]:
    """blockbuster on (as `blockbuster_ctx(OUR_CODE)`, with the allowances
    above); yields the blocking calls caught, even those the code under test
    caught and only logged (a background task's `except Exception`)."""
    bb = BlockBuster(OUR_CODE)
    for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
        bb.functions[name].can_block_predicate = _or_devnull(bb.functions[name].can_block_predicate)
    allow(bb, LIBRARY_GAPS + KNOWN_SERVER_FAULTS)
    caught: list[str] = []

    class Recorded(BlockingError):
        def __init__(self, func: str) -> None:
            caught.append(f"{func} from {_our_caller()}")
            super().__init__(func)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blockbuster.blockbuster, "BlockingError", Recorded)
        bb.activate()
        try:
            yield caught
        finally:
            bb.deactivate()

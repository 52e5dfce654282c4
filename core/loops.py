"""Background loops: one way to start a task that runs until stopped, and
to stop it (cancel, then wait for it to end, within a bound).

Every long-lived task of the server (lease renewal, registry, rate counters,
bus publisher and reader, journal writers, delivery worker, audit writer,
passivation sweeper, map watcher) is a `BackgroundLoop`, so none is left
running at shutdown and an error that ends one is logged, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

logger = logging.getLogger(__name__)

# How long a stop waits for a cancelled loop to end (the shutdown has 10 s).
STOP_TIMEOUT_S = 5.0


class BackgroundLoop:
    """A named task around `body()`. `start()` is idempotent while it runs;
    `stop()` cancels it and waits at most `stop_timeout_s` for it to end."""

    def __init__(self, name: str, body: Callable[[], Awaitable[Any]]) -> None:
        self.name = name
        self._body = body
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        try:
            await self._body()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background loop %s ended with an error", self.name)

    async def stop(self, stop_timeout_s: float | None = STOP_TIMEOUT_S) -> None:
        """Cancel the loop and wait (at most `stop_timeout_s`) for it to end:
        one stuck past the bound (a client library that holds on to a
        cancelled call) is named and left to end on its own, so that it
        cannot hold the process's shutdown."""
        task, self._task = self._task, None
        await stop_task(task, stop_timeout_s)
        if task is not None and not task.done():
            logger.warning("background loop %s did not stop within %s s", self.name, stop_timeout_s)


async def stop_task(task: asyncio.Task[Any] | None, timeout_s: float | None = None) -> None:
    """Cancel `task` (if any, and not the caller itself) and wait for it to end."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        if timeout_s is None:
            await task
        else:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)


async def stop_loops(
    loops: Iterable[BackgroundLoop], stop_timeout_s: float | None = STOP_TIMEOUT_S
) -> None:
    """Stop several loops at once: all are cancelled before any is waited for."""
    await asyncio.gather(*(loop.stop(stop_timeout_s) for loop in loops))


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout_s: float | None = None) -> None:
    """Cancel every task (but the caller), then wait at most `timeout_s` for
    them all to end; one stuck past the bound is left to end on its own."""
    pending = [t for t in tasks if t is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


def spawn(
    coro: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]], name: str | None = None
) -> None:
    """Run `coro` as a task kept in `tasks` until it ends (so it is not
    garbage-collected mid-flight, and a stop can cancel what is left)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)

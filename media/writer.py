"""The recorder's writer thread (media/passthrough.py): the containers are
opened, muxed into and closed there, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("enf.recorder")

Job = tuple[Callable[..., Any], tuple[Any, ...]]


class Writer:
    """One thread owning the containers: opening, muxing, the rare transcoding
    and closing all happen there, in order, never on the event loop. Jobs are
    submitted on the loop and handed over a batch per loop iteration (a
    thread hand-off per frame would cost more than muxing it)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._batch: list[Job] = []
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn(*args)` for the writer (on the event loop's thread)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
            self._thread.start()
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._batch.append((fn, args))

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._jobs.put(batch)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the writer, after what is queued; its result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, result, None)

        self.submit(job)
        return await done

    def close(self) -> None:
        """Finish what is queued and end the thread (from any thread but the
        writer's, once nothing more is submitted)."""
        if self._thread is not None:
            self._hand_over()
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (batch := self._jobs.get()) is not None:
            for fn, args in batch:
                try:
                    fn(*args)
                except Exception:  # one file's trouble must not stop the others
                    logger.exception("recorder writer job failed")


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)

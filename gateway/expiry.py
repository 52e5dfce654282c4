"""The token expiries of a loop's connections, on one timer.

A connection is closed with 4401 when its token reaches `exp`
(`gateway.connection`). Rather than a timer each (a TimerHandle, its bound
method and context: about half a kilobyte an idle connection keeps), the
connections of one event loop share a heap of `(exp, connection id)` and
one timer, set to the earliest. A connection that ends leaves its entry to
be skipped; the heap is rebuilt when such entries outnumber the live ones.
"""

from __future__ import annotations

import asyncio
import heapq
import time
import weakref
from typing import Protocol


class Expiring(Protocol):
    id: str

    def expired(self) -> None: ...


class Expiries:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, str]] = []
        self._live: dict[str, Expiring] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due = float("inf")  # when the timer fires

    def __len__(self) -> int:
        return len(self._live)

    def add(self, at: float, conn: Expiring) -> None:
        """Call `conn.expired()` at `at` (wall-clock seconds), unless discarded."""
        self._live[conn.id] = conn
        heapq.heappush(self._heap, (at, conn.id))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if e[1] in self._live]
            heapq.heapify(self._heap)
        self._arm()

    def discard(self, conn: Expiring) -> None:
        if self._live.get(conn.id) is conn:
            del self._live[conn.id]

    def _arm(self) -> None:
        if not self._heap:
            return
        at = self._heap[0][0]
        if at >= self._due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = at
        self._timer = self._loop.call_later(max(0.0, at - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer, self._due = None, float("inf")
        now = time.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, cid = heapq.heappop(heap)
            conn = self._live.pop(cid, None)
            if conn is not None:
                conn.expired()
        self._arm()


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Expiries] = (
    weakref.WeakKeyDictionary()
)


def expiries() -> Expiries:
    """The running loop's."""
    loop = asyncio.get_running_loop()
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = Expiries(loop)
    return found

"""The server's WebSocket pings (`heartbeat_s` of the welcome), for every
socket of an app from one task.

aiohttp's own heartbeat keeps a timer per socket (and a second one while a
ping is out): about a kilobyte an idle connection holds for nothing but
waiting. Here one loop wakes every `heartbeat_s`, cuts each socket that has
sent nothing (not even the pong) since the previous round's ping, and pings
the others. A peer that vanished is so cut within two intervals (aiohttp:
one and a half); a live one is pinged once an interval, as before. The read
loop (`gateway.ws`) marks a socket heard on every frame and answers the
client's own pings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Protocol

from core.loops import BackgroundLoop

logger = logging.getLogger(__name__)

# Sockets pinged between two yields to the event loop: a round over 10,000
# idle sockets does not hold the loop for all of them at once.
BATCH = 256


class Beating(Protocol):
    # A frame arrived since the last round's ping (True for a socket that has
    # seen no round yet, so that its first round pings it).
    heard: bool

    async def ping(self) -> None: ...

    def cut(self, reason: str) -> None: ...


class Heartbeat:
    def __init__(self, interval_s: float, conns: Collection[Beating]) -> None:
        self.interval_s = interval_s
        self._conns = conns
        self._loop = BackgroundLoop("ws-heartbeat", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            cut = await self.round()
            if cut:
                logger.info("cut %d sockets that answered no ping in %s s", cut, self.interval_s)

    async def round(self) -> int:
        """Ping every socket; cut those silent since the last ping. Returns
        how many were cut."""
        cut = 0
        for n, conn in enumerate(list(self._conns), 1):
            if not conn.heard:
                conn.cut(f"no pong within {self.interval_s} s")
                cut += 1
            else:
                conn.heard = False
                await conn.ping()
            if n % BATCH == 0:
                await asyncio.sleep(0)
        return cut

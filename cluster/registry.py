"""Gateways announce themselves in Redis (cluster mode), for `run.py cluster status`.

Every few seconds each gateway writes its id, address and connection count
into the hash `enf:gateways` with the time; a gateway not heard from for
three periods is shown as gone (and dropped from the hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from core.loops import BackgroundLoop

logger = logging.getLogger(__name__)

KEY = "enf:gateways"
PERIOD_S = 5.0


class GatewayRegistry:
    def __init__(
        self, client: aioredis.Redis, gateway_id: str, url: str, connections: Callable[[], int]
    ) -> None:
        self.client = client
        self.gateway_id = gateway_id
        self.url = url
        self._connections = connections
        self._announcer = BackgroundLoop("gateway-registry", self._run)

    def start(self) -> None:
        self._announcer.start()

    async def _run(self) -> None:
        while True:
            entry = {
                "url": self.url,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "connections": self._connections(),
                "at": time.time(),
            }
            with contextlib.suppress(Exception):
                await self.client.hset(KEY, self.gateway_id, json.dumps(entry))
            await asyncio.sleep(PERIOD_S)

    async def stop(self) -> None:
        await self._announcer.stop()
        with contextlib.suppress(Exception):
            await self.client.hdel(KEY, self.gateway_id)


async def live_gateways(client: aioredis.Redis) -> dict[str, dict[str, Any]]:
    raw: dict[Any, Any] = await client.hgetall(KEY)
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    for k, v in raw.items():
        gid = k.decode() if isinstance(k, bytes) else str(k)
        entry = json.loads(v)
        if now - float(entry.get("at", 0)) > 3 * PERIOD_S:
            await client.hdel(KEY, gid)
            continue
        out[gid] = entry
    return out

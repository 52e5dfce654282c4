"""One delivery worker per cluster: the gateway holding a Postgres advisory lock.

With several gateways (ENF_CLUSTER=ray) each would otherwise send every
outbox row. The lock lives as long as the leader's session: a leader that
dies loses it with its connection, and another gateway takes over within a
few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from core.loops import BackgroundLoop
from delivery.worker import DeliveryWorker
from persistence import locks

logger = logging.getLogger(__name__)

LOCK_KEY = 0x454E4644  # "ENFD"
CHECK_S = 2.0


class DeliveryLeader:
    def __init__(
        self,
        pool: Any,
        make_worker: Callable[[], DeliveryWorker],
        on_worker: Callable[[DeliveryWorker], None],
    ) -> None:
        self._pool = pool
        self._make = make_worker
        self._on_worker = on_worker
        self._loop = BackgroundLoop("delivery-leader", self._run)
        self.worker: DeliveryWorker | None = None
        self.leading = False

    def start(self) -> None:
        self._loop.start()

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await self._pool.acquire()
                while not await locks.try_advisory_lock(conn, LOCK_KEY):  # noqa: ASYNC110 (polling Postgres)
                    await asyncio.sleep(CHECK_S)
                self.leading = True
                self.worker = self._make()
                self._on_worker(self.worker)
                await self.worker.start()
                logger.info("this gateway runs the cluster's delivery worker")
                while True:
                    await asyncio.sleep(CHECK_S)
                    await locks.ping(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("delivery leadership lost or not reachable: %s", exc)
                await asyncio.sleep(CHECK_S)
            finally:
                await self._step_down(conn)

    async def _step_down(self, conn: Any) -> None:
        if self.worker is not None and self.leading:
            with contextlib.suppress(Exception):
                await self.worker.stop()
        self.leading = False
        if conn is not None:
            try:
                await locks.unlock_all(conn)
            except Exception:
                # Its lock may still be held: the connection must not go back
                # to the pool (which does not reset advisory locks) alive. (A
                # pool closing under it has taken it back already.)
                with contextlib.suppress(Exception):
                    conn.terminate()
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def stop(self) -> None:
        await self._loop.stop()

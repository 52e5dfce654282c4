"""Recorders as Ray actors (ENF_CLUSTER=ray).

Each `recorder-<i>` is a named, detached Ray actor reserving one CPU
(`num_cpus=1`), so recording capacity grows with the cluster's cores. It runs
a `RecorderService` (and so its aiortc worker process) and sends its reports
to the session actors through a `ShardRouter`. A session is recorded by
recorder `shard_of("recorder:" + session_id, ENF_RECORDERS)`.

`RayRecorder` is what a shard's session actors see as `ctx.media`: the same
three calls as `RecorderService` (offer, ice, finish).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from cluster.raycluster import import_ray, recorder_name
from cluster.router import ShardRouter
from config.settings import Settings
from core.errors import ProtocolError
from core.ids import shard_of
from media.recorder import RecorderService
from media.storage import storage_for
from persistence.pool import create_pool
from persistence.shardmap import load_map

logger = logging.getLogger(__name__)


def recorder_of(session_id: str, recorders: int) -> int:
    return shard_of("recorder:" + session_id, recorders)


class RecorderHost:
    """The inside of a recorder actor (plain Python)."""

    def __init__(self, index: int, payload: dict[str, Any]) -> None:
        self.index = index
        self.payload = payload
        self.service: Any = None
        self._starting: asyncio.Task[None] | None = None

    async def ready(self) -> dict[str, Any]:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        return {"recorder": self.index, "sessions": len(self.service.sessions)}

    async def _start(self) -> None:
        settings = Settings(**self.payload)
        assert settings.database_url
        pool = await create_pool(settings.database_url, max_size=2)
        router = ShardRouter(settings, pool, f"recorder-{self.index}", await load_map(pool))
        storage = storage_for(settings.recordings_location, settings.s3_endpoint_url)
        self.service = RecorderService(
            Path(settings.data_dir) / f"recorder-{self.index}", storage, router.tell
        )
        await self.service.start()

    async def call(self, op: str, args: list[Any]) -> tuple[str, Any, str]:
        await self.ready()
        try:
            if op == "offer":
                return ("ok", await self.service.offer(*args), "")
            if op == "ice":
                await self.service.ice(*args)
            elif op == "finish":
                self.service.finish(*args)
            else:
                return ("err", "bad_request", f"no recorder call {op!r}")
        except ProtocolError as exc:
            return ("err", exc.code, exc.message)
        return ("ok", None, "")


def recorder_actor_class() -> Any:
    global _RECORDER_ACTOR
    if _RECORDER_ACTOR is None:
        import ray

        class RecorderActor:
            def __init__(self, index: int, payload: dict[str, Any]) -> None:
                self.host = RecorderHost(index, payload)
                self._kick = ray.get_runtime_context().current_actor.ready.remote()

            async def ready(self) -> dict[str, Any]:
                return await self.host.ready()

            async def call(self, op: str, args: list[Any]) -> tuple[str, Any, str]:
                return await self.host.call(op, args)

            async def shutdown(self) -> None:
                if self.host.service is not None:
                    await self.host.service.stop()

        _RECORDER_ACTOR = ray.remote(RecorderActor)
    return _RECORDER_ACTOR


_RECORDER_ACTOR: Any = None


async def ensure_recorders(settings: Settings, payload: dict[str, Any]) -> None:
    """Start the recorder actors that do not exist yet (from a gateway)."""
    cls = recorder_actor_class()
    handles = []
    for i in range(settings.recorders):
        handles.append(
            cls.options(
                name=recorder_name(i),
                namespace=settings.ray_namespace,
                lifetime="detached",
                get_if_exists=True,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=1000,
                num_cpus=1,
            ).remote(i, payload)
        )
    await asyncio.gather(*(h.ready.remote() for h in handles))
    logger.info("%d recorder actors ready", len(handles))


class RayRecorder:
    """`ctx.media` in a shard: calls the session's recorder actor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: set[str] = set()  # recorded elsewhere; nothing here
        self._handles: dict[int, Any] = {}

    def _handle(self, session_id: str) -> Any:
        ray = import_ray()
        i = recorder_of(session_id, self.settings.recorders)
        h = self._handles.get(i)
        if h is None:
            h = self._handles[i] = ray.get_actor(
                recorder_name(i), namespace=self.settings.ray_namespace
            )
        return h

    async def _call(self, session_id: str, op: str, args: list[Any]) -> Any:
        try:
            status, value, message = await self._handle(session_id).call.remote(op, args)
        except ProtocolError:
            raise
        except Exception as exc:
            self._handles.clear()
            logger.warning("recorder unavailable: %s", exc)
            raise ProtocolError("unavailable", "the recorder is restarting, try again") from exc
        if status != "ok":
            raise ProtocolError(value, message)
        return value

    async def offer(self, session_id: str, user_id: str, sdp: str) -> str:
        return str(await self._call(session_id, "offer", [session_id, user_id, sdp]))

    async def ice(self, session_id: str, user_id: str, candidate: dict[str, Any]) -> None:
        await self._call(session_id, "ice", [session_id, user_id, candidate])

    def finish(self, session_id: str) -> None:
        task = asyncio.ensure_future(self._call(session_id, "finish", [session_id]))
        task.add_done_callback(_log_finish_failure)

    async def stop(self) -> None:
        return None


def _log_finish_failure(task: asyncio.Future[Any]) -> None:
    """The session then waits for its recording until its shard restarts and
    asks again (recovery of VIDEO_COMPLETED sessions)."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not ask the recorder to finish: %s", task.exception())

"""Ray itself: joining the running cluster (never starting a private one),
the names and options of the shard and recorder actors, and the settings
payload they start with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from config.settings import Settings
from core.messages import Message
from persistence.shardmap import ShardMap

logger = logging.getLogger(__name__)

Item = tuple[str, Message, bool]  # (actor id, message, wants a reply)
Result = tuple[str, Any, str]  # ("ok", value, "") | ("err", code, message)


def node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    ray = import_ray()
    if not ray.is_initialized():
        return None
    node: str = ray.get_runtime_context().get_node_id()
    return node


def shard_name(index: int) -> str:
    return f"shard-{index}"


def recorder_name(index: int) -> str:
    return f"recorder-{index}"


def settings_payload(settings: Settings, dsn: str) -> dict[str, Any]:
    """What a shard process needs to build the same Settings (JSON-safe)."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["database_url"] = dsn
    data["data_dir"] = str(settings.data_dir)  # absolute (Settings)
    return data


def import_ray() -> Any:
    import ray

    return ray


# -- the shard side ------------------------------------------------------------------


def connect_ray(settings: Settings) -> None:
    """Join the running Ray cluster; never start a private one."""
    ray = import_ray()
    if ray.is_initialized():
        return
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        # Ray retries an unreachable head for minutes; say so at once instead.
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            raise RuntimeError(
                f"ENF_CLUSTER=ray: no Ray cluster answers at {address} ({exc}). Start one with"
                " `ray start --head` (README, Running a cluster) or fix RAY_ADDRESS."
            ) from exc
    # A cluster on loopback (one machine, tests): stay on loopback too.
    local = address.split(":")[0] in ("127.0.0.1", "localhost")
    try:
        ray.init(
            address=address,
            namespace=settings.ray_namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
            **({"_node_ip_address": "127.0.0.1"} if local else {}),
        )
    except ConnectionError as exc:
        raise RuntimeError(
            f"ENF_CLUSTER=ray: no running Ray cluster at {address!r} ({exc}). Start one with"
            " `ray start --head` (see README, Cluster) or set RAY_ADDRESS."
        ) from exc
    logger.info("joined the Ray cluster at %s (namespace %s)", address, settings.ray_namespace)


def shard_options(shard_map: ShardMap, index: int) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = shard_map.nodes[index] if index < len(shard_map.nodes) else None
    strategy: Any = NodeAffinitySchedulingStrategy(node_id=node, soft=True) if node else "SPREAD"
    return {
        "name": shard_name(index),
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
        "num_cpus": 0,
        "scheduling_strategy": strategy,
    }


async def kill_shards(namespace: str, count: int, recorders: int = 1) -> None:
    """Stop a namespace's shard and recorder actors for good (tests)."""
    ray = import_ray()
    names = [shard_name(k) for k in range(count)] + [recorder_name(i) for i in range(recorders)]
    for name in names:
        try:
            h = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        with contextlib.suppress(Exception):
            await asyncio.wait_for(h.shutdown.remote(), 10)
        with contextlib.suppress(Exception):
            ray.kill(h, no_restart=True)

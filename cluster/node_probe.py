"""Whether a Ray node that just joined takes work yet, before a shard is
moved to it (`cluster rebalance`).

A raylet is listed alive before its workers start, and before the GCS, which
places actors, has its resources in view: a soft placement made before then
falls back to another node, and each try costs the moved shard a restart.
So a probe goes first, the way the shard will: a task pinned to the node
(its workers run), then a throwaway actor placed with the shard's own soft
affinity, again until one lands there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class _Probe:
    def node_id(self) -> str:
        return _node_id()


async def node_takes_work(node: str, timeout: float = 120.0) -> None:
    """Wait (up to `timeout`) until `node` runs a pinned task and an actor
    placed there with soft affinity lands there; then the move goes ahead
    whatever happened (the move's own tries say where the shard went)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    loop = asyncio.get_running_loop()
    started = loop.time()
    task = (
        ray.remote(_node_id)
        .options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        )
        .remote()
    )
    try:
        await asyncio.wait_for(task, timeout)
    except Exception as exc:  # timed out, or the node died
        with contextlib.suppress(Exception):
            ray.cancel(task, force=True)
        logger.warning("node %s ran no probe task (%r): moving anyway", node, exc)
        return
    soft = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
    tries = 0
    while loop.time() - started < timeout:
        tries += 1
        actor: Any = ray.remote(_Probe).options(num_cpus=0, scheduling_strategy=soft).remote()
        left = max(1.0, timeout - (loop.time() - started))
        try:
            landed = await asyncio.wait_for(actor.node_id.remote(), left)
        except Exception as exc:  # timed out, the probe died, or the node did
            logger.warning("node %s: an actor probe failed (%r): moving anyway", node, exc)
            return
        finally:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if landed == node:
            waited = loop.time() - started
            logger.info("node %s takes work (after %.1f s, %d actor probes)", node, waited, tries)
            return
        await asyncio.sleep(1.0)
    logger.warning("node %s took no actor in %.0f s: moving anyway", node, timeout)

"""Operating the cluster: `python run.py cluster status|rebalance`.

- status: the Ray nodes, each shard (node, process, epoch, actors hosted),
  and each gateway (address, connections), from Ray, Postgres and Redis.
- rebalance: spread the shards evenly over the live nodes, moving as few as
  possible. A move records the new placement in the shard map (its epoch
  moves, so gateways re-resolve), passivates the shard (every actor
  snapshotted), stops it, and starts it again on the new node, where it
  claims a new epoch and re-activates actors on demand from the journal.
  Requests made during a move get `unavailable` and are retried by id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from cluster.node_probe import node_takes_work
from cluster.raycluster import (
    connect_ray,
    recorder_name,
    settings_payload,
    shard_name,
    shard_options,
)
from cluster.registry import live_gateways
from cluster.shard import shard_actor_class
from config.settings import Settings
from persistence.shardmap import load_map, place_shard

logger = logging.getLogger(__name__)


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [n for n in nodes if n.get("Alive")]


async def shard_infos(namespace: str, count: int) -> list[dict[str, Any]]:
    import ray

    async def one(k: int) -> dict[str, Any]:
        try:
            h = ray.get_actor(shard_name(k), namespace=namespace)
        except ValueError as exc:  # no actor of that name: nothing will restart it
            return {"shard": k, "error": f"missing: {exc}", "missing": True}
        try:
            info: dict[str, Any] = await asyncio.wait_for(h.info.remote(), 5)
            return info
        except Exception as exc:  # its process died: Ray is starting another
            return {"shard": k, "error": f"{type(exc).__name__}: {exc}"}

    return list(await asyncio.gather(*(one(k) for k in range(count))))


async def status(settings: Settings, pool: Any) -> dict[str, Any]:
    await asyncio.to_thread(connect_ray, settings)  # blocking: off the event loop
    shard_map = await load_map(pool)
    nodes = alive_nodes()
    shards = await shard_infos(settings.ray_namespace, shard_map.count)
    gateways: list[dict[str, Any]] = []
    errors: list[str] = []
    if settings.redis_url:
        client = aioredis.from_url(settings.redis_url, socket_connect_timeout=2)
        try:
            found = await live_gateways(client)
            gateways = [{"gateway_id": gid, **g} for gid, g in sorted(found.items())]
        except Exception as exc:
            errors.append(f"gateways unknown: Redis unavailable: {exc}")
        finally:
            await client.aclose()
    return {
        "map_epoch": shard_map.epoch,
        "shard_count": shard_map.count,
        "nodes": [
            {
                "node_id": n["NodeID"],
                "address": n.get("NodeManagerAddress"),
                "cpus": n.get("Resources", {}).get("CPU", 0),
                "shards": sum(1 for s in shards if s.get("node_id") == n["NodeID"]),
            }
            for n in nodes
        ],
        "shards": [
            {**s, "placement": shard_map.nodes[s["shard"]], "state": shard_state(s, shard_map)}
            for s in shards
        ],
        "gateways": gateways,
        "errors": errors,
    }


def shard_state(info: dict[str, Any], shard_map: Any) -> str:
    """RUNNING; RESTARTING (its process died, Ray starts another); MISSING (no
    actor of that name: nothing restarts it); FENCED (a newer incarnation
    owns it; this one stops); MISPLACED (running elsewhere than the map
    places it, as after Ray restarted it on another node)."""
    if info.get("missing"):
        return "MISSING"
    if "error" in info:
        return "RESTARTING"
    if info.get("fenced"):
        return "FENCED"
    placement = shard_map.nodes[info["shard"]]
    if placement is not None and info.get("node_id") != placement:
        return "MISPLACED"
    return "RUNNING"


def plan_moves(current: dict[int, str | None], nodes: list[str]) -> list[tuple[int, str]]:
    """Moves that leave every node with floor or ceil(shards / nodes) shards,
    moving as few shards as possible. `current` maps shard -> node now."""
    if not nodes:
        return []
    count = len(current)
    base, extra = divmod(count, len(nodes))
    # The nodes that already hold the most keep the larger quotas.
    held = Counter(n for n in current.values() if n in nodes)
    order = sorted(nodes, key=lambda n: (-held[n], n))
    quota = {n: base + (1 if i < extra else 0) for i, n in enumerate(order)}
    kept: Counter[str] = Counter()
    movable: list[int] = []
    for shard in sorted(current):
        node = current[shard]
        if node in quota and kept[node] < quota[node]:
            kept[node] += 1
        else:
            movable.append(shard)
    moves: list[tuple[int, str]] = []
    for node in order:
        while kept[node] < quota[node] and movable:
            moves.append((movable.pop(0), node))
            kept[node] += 1
    return moves


async def stop_shard(settings: Settings, shard: int) -> int | None:
    """Passivate the shard (every actor snapshotted) and end its actor for
    good: how many actors it snapshotted (None: it was not running, or could
    not passivate)."""
    return await _stop_actor(settings, shard_name(shard), "passivate_all")


async def _stop_actor(settings: Settings, name: str, method: str) -> int | None:
    """`method` of the named actor (up to 30 s), then the actor ended for good
    (its process, and with it its database connections); once its name is free."""
    import ray

    try:
        old = ray.get_actor(name, namespace=settings.ray_namespace)
    except ValueError:
        return None
    n: int | None = None
    try:
        n = await asyncio.wait_for(getattr(old, method).remote(), 30)
        logger.info("%s: %s done (%s)", name, method, n)
    except Exception as exc:
        logger.warning("%s could not %s (%s): ending it anyway", name, method, exc)
    ray.kill(old, no_restart=True)
    for _ in range(100):  # the name is free once the old actor is gone
        try:
            ray.get_actor(name, namespace=settings.ray_namespace)
        except ValueError:
            break
        await asyncio.sleep(0.1)
    return n


async def stop_cluster(settings: Settings, pool: Any) -> dict[str, Any]:
    """`cluster stop`, once the gateways are stopped: every shard passivated
    (each actor snapshotted) and ended, then every recorder ended after its
    recordings are final; no process of the cluster keeps a database
    connection. The next gateway starts the shards again, and every session
    resumes from its snapshot."""
    await asyncio.to_thread(connect_ray, settings)  # blocking: off the event loop
    shard_map = await load_map(pool)
    shards = [
        {"shard": k, "snapshotted": await stop_shard(settings, k)} for k in range(shard_map.count)
    ]
    recorders = [
        {"recorder": i, "stopped": await _stop_actor(settings, recorder_name(i), "shutdown")}
        for i in range(settings.recorders)
    ]
    return {"shards": shards, "recorders": recorders}


async def move_shard(
    settings: Settings, pool: Any, dsn: str, shard: int, node: str, attempts: int = 8
) -> dict[str, Any]:
    """Passivate, move, re-activate. The placement is soft (so Ray can restart
    the shard elsewhere if its node dies), and a node that just joined may not
    take actors yet: a shard that landed elsewhere is moved again, waiting a
    second longer each time (36 s in all; on a busy machine a new node's
    first detached actor has landed elsewhere five times in a row after the
    node took the probe's)."""
    await node_takes_work(node)
    await place_shard(pool, shard, node)
    info: dict[str, Any] = {}
    tried: list[str] = []  # where each attempt landed
    for attempt in range(attempts):
        await stop_shard(settings, shard)
        shard_map = await load_map(pool)
        new = (
            shard_actor_class()
            .options(namespace=settings.ray_namespace, **shard_options(shard_map, shard))
            .remote(shard, settings_payload(settings, dsn))
        )
        info = await new.ready.remote()
        tried.append(info["node_id"])
        info["attempts"] = tried
        if info["node_id"] == node:
            logger.info("shard %d now on node %s (epoch %d)", shard, node, info["epoch"])
            return info
        logger.warning(
            "shard %d started on %s, not %s (attempt %d): trying again",
            shard,
            info["node_id"],
            node,
            attempt + 1,
        )
        await asyncio.sleep(1.0 + attempt)
    logger.error("shard %d could not be placed on %s; it runs on %s", shard, node, info["node_id"])
    return info


async def rebalance(settings: Settings, pool: Any, dsn: str) -> list[dict[str, Any]]:
    """Move shards so that every node has its share; for each move: the
    shard, where it was (`from`), where it should go (`node_id`), where each
    attempt landed (`attempts`) and whether it got there (`placed`)."""
    await asyncio.to_thread(connect_ray, settings)  # blocking: off the event loop
    shard_map = await load_map(pool)
    infos = await shard_infos(settings.ray_namespace, shard_map.count)
    current = {i["shard"]: i.get("node_id") for i in infos}
    nodes = sorted(n["NodeID"] for n in alive_nodes())
    done = []
    for shard, node in plan_moves(current, nodes):
        logger.info("moving shard %d from %s to %s", shard, current[shard], node)
        info = await move_shard(settings, pool, dsn, shard, node)
        attempts = list(info.get("attempts", []))
        done.append(
            {
                "shard": shard,
                "from": current[shard],
                "node_id": node,
                "attempts": attempts,
                "placed": bool(attempts) and attempts[-1] == node,
            }
        )
    return done


class LocalRayHead:
    """A Ray head node on loopback in its own temp dir (tests, benchmarks,
    trying cluster mode on one machine). `stop` ends only its own processes:
    `ray stop` would end every Ray cluster of the machine."""

    def __init__(self, num_cpus: int = 8) -> None:
        import tempfile

        self.num_cpus = num_cpus
        self.temp_dir = tempfile.mkdtemp(prefix="enf-ray-")
        self.address = ""

    @staticmethod
    def cli() -> str:
        import shutil
        import sys
        from pathlib import Path

        return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"

    def start(self) -> str:
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        subprocess.run(
            [
                self.cli(),
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                f"--num-cpus={self.num_cpus}",
                "--include-dashboard=false",
                "--object-store-memory=200000000",
                "--disable-usage-stats",
                f"--temp-dir={self.temp_dir}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=180,
        )
        self.address = f"127.0.0.1:{port}"
        return self.address

    def pids(self) -> list[int]:
        """Processes of this cluster: those naming its temp dir or its port."""
        import os

        port = self.address.rsplit(":", 1)[-1]
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.temp_dir in cmd or (port and f"{self.address}" in cmd):
                found.append(int(entry))
        return found

    def stop(self) -> None:
        import os
        import shutil
        import signal
        import time

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def add_ray_node(address: str, num_cpus: int = 2) -> None:
    """A second raylet on this machine joining the head at `address` (what
    adding a machine does); it stops with the head's processes."""
    import subprocess

    subprocess.run(
        [
            LocalRayHead.cli(),
            "start",
            f"--address={address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )

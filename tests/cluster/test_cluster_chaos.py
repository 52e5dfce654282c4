"""The chaos run of issue 13 on the Ray host (ENF_CLUSTER=ray): the run of
tests/chaos/test_chaos_offers.py (six notaries and six customers doing whole
notarizations back to back, clients that retry by id and re-join with
`since_seq`) against a cluster gateway in this process with two shards as Ray
actors, while faults come at random (seeded) moments, one of the cluster's
then one of the database's, in turn:

- a shard SIGKILLed (as tests/cluster/test_cluster.py does): Ray restarts it,
  it claims a newer epoch and re-activates its actors from the journal;
- Redis SIGKILLed and started again (empty) after a short pause, on the same
  Unix socket (`OwnRedis`): pub/sub, presence leases and rate limits are away
  meanwhile;
- the Postgres faults of the local run, through a `TcpProxy` (tests/pgproxy.py)
  that the gateway's DSN goes through, and so the shards' too (the gateway
  hands its DSN to the shard actors it starts, and Ray restarts a shard with
  the same arguments): every connection cut, a cut just as an accept is
  recorded, latency for a while, the database gone for a second or two.

The checker (tests/chaos/checker.py) then finds no violation over the whole
history and journal, every hash chain verifies, every live session agrees with
what its shard says of it, and enough got done. Neither the gateway (the net
of tests/conftest.py) nor the shards' processes (their Ray worker logs, read
after the run) log an ERROR: none is expected of these faults.

Not checked here: enf_offers_refused_by_session_total, which the local run
asserts; in cluster mode the Matchmaker runs in a shard, which has no metrics.

ENF_CHAOS_SEED replays the faults; ENF_CHAOS_SECONDS sets the length (45 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.raycluster import kill_shards, shard_name
from core.ids import shard_of
from tests.chaos.checker import Journal, broken_chains, check, load_journal
from tests.chaos.history import History
from tests.chaos.test_chaos_offers import (
    CUSTOMERS,
    Run,
    drive,
    notaries_free,
    report,
    server_errors,
    server_view,
    summary,
)
from tests.chaos.test_chaos_offers import seed as chaos_seed
from tests.cluster.test_cluster_redis import OwnRedis
from tests.conftest import Harness, Servers
from tests.pgproxy import TcpProxy
from tests.server_process import is_error_line

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.chaos]

SHARDS = 2
BACK_S = 90.0  # the longest a killed shard may take to be back
REDIS_AWAY_S = (0.5, 3.0)  # how long Redis stays down
GAP_S = (2.0, 6.0)  # between two faults


@asynccontextmanager
async def proxied_cluster(
    database: str, tmp_path: Path, ray_address: str, redis_url: str, **settings: Any
) -> AsyncIterator[tuple[Harness, TcpProxy, str]]:
    """tests/cluster/conftest.py's `make_cluster_server`, with the database
    DSN through a `TcpProxy` (that fixture takes no DSN of its own); the
    gateway, the proxy and the shards' Ray namespace; all stopped after."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    async with TcpProxy.to_dsn(database) as proxy:
        servers = Servers(
            proxy.dsn(database),
            tmp_path,
            cluster="ray",
            redis_url=redis_url,
            ray_address=ray_address,
            ray_namespace=namespace,
            shards=SHARDS,
            presence_lease_s=3.0,
        )
        try:
            yield await servers.start(**settings), proxy, namespace
        finally:
            proxy.disarm()
            proxy.latency(0)
            await servers.close()
            await kill_shards(namespace, SHARDS)


@dataclass
class ClusterFaults:
    """The cluster's faults for `Run.hooks`: a shard SIGKILLed, Redis restarted."""

    namespace: str
    redis: OwnRedis
    run: Run
    pids: set[int] = field(default_factory=set)  # every shard process seen
    notes: list[str] = field(default_factory=list)

    async def info(self, index: int) -> dict[str, Any]:
        """The shard's figures (`ready` starts one Ray restarted, if need be)."""
        handle = await asyncio.to_thread(ray.get_actor, shard_name(index), namespace=self.namespace)
        info: dict[str, Any] = await asyncio.wait_for(handle.ready.remote(), 10)
        self.pids.add(int(info["pid"]))
        return info

    async def up(self, index: int, before: dict[str, Any] | None = None) -> dict[str, Any]:
        """The shard once it answers (as another process than `before`)."""
        async with asyncio.timeout(BACK_S):
            while True:
                try:
                    info = await self.info(index)
                except Exception:  # dead, restarting, or not found yet
                    info = None
                if info is not None and (
                    before is None
                    or (info["pid"] != before["pid"] and info["epoch"] > before["epoch"])
                ):
                    return info
                await asyncio.sleep(0.2)  # pacing: Ray restarts the process

    async def kill_shard(self) -> None:
        index = self.run.rng.randrange(SHARDS)
        before = await self.up(index)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        os.kill(int(before["pid"]), signal.SIGKILL)
        after = await self.up(index, before)
        self.notes.append(
            f"shard {index}: pid {before['pid']} (epoch {before['epoch']}) killed at"
            f" {self.run.now() - (loop.time() - killed_at):.1f} s, back as pid {after['pid']}"
            f" (epoch {after['epoch']}) in {loop.time() - killed_at:.1f} s"
        )

    async def restart_redis(self) -> None:
        away = self.run.rng.uniform(*REDIS_AWAY_S)
        await self.redis.kill()
        await self.run.pause(away)
        await self.redis.start()
        self.notes.append(f"Redis down at {self.run.now() - away:.1f} s for {away:.1f} s")


def ray_logs_dir() -> Path | None:
    """The logs directory of the Ray session this process is connected to
    (Ray's private API: None if it moved)."""
    try:
        node: Any = ray._private.worker._global_node
        return Path(node.get_logs_dir_path())
    except Exception:
        return None


LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")  # the console format
NOTABLE = re.compile(r" (WARNING|ERROR|CRITICAL) |matchmaker recovered| started \(epoch ")


@dataclass
class ShardLogs:
    """What the shard processes' Ray worker logs say (read after the run)."""

    started: int = 0  # lines saying a shard process started
    errors: list[str] = field(default_factory=list)  # ERROR lines
    about: list[str] = field(default_factory=list)  # lines naming one of the sessions asked
    # Warnings, shard starts and the Matchmaker's recoveries: (time, line)
    notable: list[tuple[datetime, str]] = field(default_factory=list)

    def between(self, start: datetime, stop: datetime) -> list[str]:
        return [line for at, line in sorted(self.notable) if start <= at <= stop]


def shard_logs(pids: set[int], sessions: set[str]) -> ShardLogs:
    """The worker logs of these shard processes (blocks)."""
    out = ShardLogs()
    logs = ray_logs_dir()
    if logs is None:
        return out
    for pid in sorted(pids):
        for path in sorted(logs.glob(f"worker-*-{pid}.*")):
            for line in path.read_text(errors="replace").splitlines():
                out.started += " started (epoch " in line
                if is_error_line(line):
                    out.errors.append(f"{path.name}: {line}")
                if any(sid in line for sid in sessions):
                    out.about.append(f"pid {pid}: {line}")
                stamp = LOG_TIME.match(line)
                if stamp and NOTABLE.search(line):
                    at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)
                    out.notable.append((at, f"pid {pid}: {line}"))
    return out


SID = re.compile(r"session ([0-9a-f]{8}-[0-9a-f-]{27})")


def stalls(run: Run, journal: Journal) -> list[str]:
    """For each session a round failed on: when its last request was
    answered, the faults just before, its journal head, and the last seq each
    connection that followed it received (printed, not asserted: a stall is a
    liveness matter, beyond the checker's properties)."""
    heads: dict[str, int] = {}
    for row in journal.rows:
        heads[row.actor_id] = max(heads.get(row.actor_id, 0), row.seq)
    out = []
    for sid in sorted({m[1] for f in run.failures for m in SID.finditer(f)}):
        topic = f"session:{sid}"
        sent = [
            r
            for r in run.history.records
            if r.direction == "sent" and (r.frame.get("data") or {}).get("session_id") == sid
        ]
        seen: dict[tuple[str, int], int] = {}
        for r in run.history.records:
            f = r.frame
            if r.direction == "received" and f.get("topic") == topic and "seq" in f:
                seen[(r.user, r.conn)] = max(seen.get((r.user, r.conn), 0), f["seq"])
        last = sent[-1] if sent else None
        at = last.t if last else 0.0
        before = [f"{k}@{t:.1f}" for t, k in run.timeline if at - 15 <= t <= at]
        what = f"{last.frame['type']} by {last.user} at {at:.1f} s" if last else "no request"
        out.append(
            f"session {sid}: last request {what}; faults in the 15 s before: {before};"
            f" journal head {heads.get(topic)}; received {seen}"
        )
    return out


def evidence(journal: Journal, sessions: set[str], t0: datetime) -> list[str]:
    """The journal rows of these sessions, and the notaries' rows about them,
    with their shards and times (the history's clock, 0 = its start)."""
    out = []
    for row in sorted(journal.rows, key=lambda r: r.at):
        d = row.data
        sid = row.actor_id.split(":", 1)[1] if row.actor_id.startswith("session:") else None
        if sid not in sessions and d.get("session_id") not in sessions:
            continue
        brief = {k: d[k] for k in ("state", "prev", "enp_id", "offer_id", "session_id") if k in d}
        out.append(
            f"{(row.at - t0).total_seconds():7.3f} s  {row.actor_id} (shard"
            f" {shard_of(row.actor_id, SHARDS)}) seq {row.seq} {row.name} {brief}"
        )
    return out


async def test_chaos_on_the_ray_host(
    database: str,
    tmp_path: Path,
    ray_cluster: str,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    seed = chaos_seed(record_property)
    # Also for what reads RAY_ADDRESS itself (as make_cluster_server does).
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    redis = OwnRedis(tmp_path)
    await redis.start()
    try:
        with server_errors() as errors:
            async with proxied_cluster(
                database, tmp_path, ray_cluster, redis.url, offer_timeout_s=5
            ) as (h, proxy, namespace):
                run = Run(h, proxy, History(), random.Random(seed), gap=GAP_S)
                faults = ClusterFaults(namespace, redis, run)
                run.hooks.update(
                    {"shard kill": faults.kill_shard, "redis restart": faults.restart_redis}
                )
                for k in range(SHARDS):
                    await faults.up(k)
                await drive(run)
                proxy.disarm()
                journal = await load_journal(database)
                await server_view(h, journal)
                disagree = await notaries_free(h, run.history, journal)
                for k in range(SHARDS):
                    await faults.up(k)
                violations = check(run.history.records, journal) + broken_chains(journal)
                involved = {m[1] for v in violations for m in SID.finditer(v.detail)}
                logs = await asyncio.to_thread(shard_logs, faults.pids, involved)
    finally:
        await redis.kill()

    print(report(run, seed, journal, errors.lines, disagree))
    t0 = datetime.now(UTC) - timedelta(seconds=run.now())
    print(f"history time 0 = {t0.isoformat()}")
    print("cluster faults:", *faults.notes, sep="\n  ")
    print("fault timeline:", [f"{k}@{t:.1f}" for t, k in run.timeline])
    print(f"shard processes {sorted(faults.pids)}, {logs.started} of them logged their start;")
    print(f"  their ERROR lines: {logs.errors[:20]}")
    print("stalled rounds:", *stalls(run, journal), sep="\n  ")
    if violations:
        print("the journal about the sessions of the violations:")
        print(*evidence(journal, involved, t0), sep="\n  ")
        print("the shards' logs about them:", *logs.about[:60], sep="\n  ")
        ats = [
            r.at
            for r in journal.rows
            if r.actor_id.split(":", 1)[-1] in involved or r.data.get("session_id") in involved
        ]
        if ats:
            start, stop = min(ats) - timedelta(seconds=2), max(ats) + timedelta(seconds=2)
            print("the shards' warnings meanwhile:", *logs.between(start, stop)[:80], sep="\n  ")
    assert not violations, summary(seed, violations)
    # No ERROR from the gateway (also the net of tests/conftest.py) nor the shards.
    logged = errors.lines + logs.errors
    assert not logged, f"seed {seed}: errors logged: {logged[:10]}"
    # The shards' logs were read (each shard process says when it started).
    assert logs.started >= len(faults.pids), f"seed {seed}: shard logs not found"
    assert run.faults["shard kill"] and run.faults["redis restart"], f"seed {seed}: {run.faults}"
    assert len(run.completed) >= CUSTOMERS, f"seed {seed}: too little got done"

"""Cluster operations (issue 18) on a local Ray cluster: `cluster status`
and `rebalance` (every attempt named, /ready back without traffic), one set
of keys per cluster, `cluster stop`, and each shard's figures in /metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
import ray

from cluster.ops import add_ray_node
from cluster.raycluster import settings_payload, shard_name
from cluster.shard import ShardServer
from core.ids import shard_of
from persistence.keys import KeyFileError, Keys
from tests.cluster.clusters import SHARDS, Cluster, journal_names, ready_within, retry, run_cli
from tests.conftest import MakeServer
from tests.flows import (
    PH,
    assigned_session,
    http_call,
    online_notary,
    request_session,
    run_video_to_completion,
)
from tests.functional.test_ops import scrape, value

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


async def test_status_and_rebalance_onto_a_new_node(cluster: Cluster, ray_cluster: str) -> None:
    gw = await cluster.gateway()
    customer, notary, sid = await assigned_session(gw)
    await asyncio.sleep(5.5)  # a registry period: the gateway has announced itself
    report = await run_cli(cluster, "status")
    assert report["shard_count"] == SHARDS
    assert sum(s["actors"] for s in report["shards"]) >= 3  # session, notary, matchmaker
    [entry] = report["gateways"]
    assert entry["connections"] == 2 and entry["gateway_id"]
    assert {s["state"] for s in report["shards"]} == {"RUNNING"} and report["errors"] == []
    nodes_before = {n["node_id"] for n in report["nodes"]}

    # An operator adds a node (here: a second raylet on this machine) ...
    await asyncio.to_thread(add_ray_node, ray_cluster)
    # ... and rebalances: shards move to it while the session goes on.
    moves = await run_cli(cluster, "rebalance")
    report = await run_cli(cluster, "status")
    new_nodes = {n["node_id"] for n in report["nodes"]} - nodes_before
    assert new_nodes, report["nodes"]
    shard_nodes = [s["node_id"] for s in report["shards"]]
    assert len(set(shard_nodes)) == min(SHARDS, len(report["nodes"])), report["shards"]
    assert moves and all(m["node_id"] in shard_nodes for m in moves)
    # The output names every attempt and where it landed.
    assert all(m["placed"] and m["attempts"][-1] == m["node_id"] for m in moves), moves
    assert any(node in new_nodes for node in shard_nodes)
    # The placement is in the shard map, and the map's epoch moved.
    assert [s["placement"] for s in report["shards"] if s["shard"] == moves[0]["shard"]] == [
        moves[0]["node_id"]
    ]

    # With no client traffic at all, the gateway drops its handles to the
    # moved shards' old processes by itself: /ready is 200 again within 10 s.
    await ready_within(gw, 10.0)
    # A presence change on whichever shard hosts n2 reaches the matchmaker
    # (the shards' own handles to the moved shards are renewed too).
    n2 = await online_notary(gw, "n2")
    c2 = await gw.client("c2", "customer")
    sid2 = await request_session(c2, key="k2", n=2)
    await n2.expect("offer", session_id=sid2)

    await retry(
        customer,
        "session.join",
        {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH},
        "cj-1",
    )
    await retry(notary, "session.join", {"session_id": sid, "location": PH}, "nj-1")
    await run_video_to_completion(customer, notary, sid)
    names = await journal_names(cluster.database, f"session:{sid}")
    assert names.count("session.state") == 8


async def test_every_process_holds_the_clusters_keys_or_refuses_to_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Issue 18 item 2: a shard never makes keys of its own. One started where
    the key files are missing, or with other keys, refuses to start and says
    why; the running shards report the same key ids as the cluster recorded."""
    await cluster.gateway()  # the first process: it makes and records the keys
    report = await run_cli(cluster, "status")
    recorded = {s["shard"]: s["keys"] for s in report["shards"]}
    assert len({json.dumps(k, sort_keys=True) for k in recorded.values()}) == 1, recorded
    ids = next(iter(recorded.values()))
    assert set(ids) == {"signing", "pii"}

    before = await cluster.shard_info(0)
    bare = tmp_path / "node-without-keys"
    payload = settings_payload(cluster.settings, cluster.database)
    with pytest.raises(KeyFileError, match="no such key file"):
        await ShardServer(0, {**payload, "data_dir": str(bare)}).ready()

    other = tmp_path / "node-with-other-keys"
    await asyncio.to_thread(Keys.load, None, None, other)  # a node that made its own
    with pytest.raises(KeyFileError, match="other keys than the cluster: signing key"):
        await ShardServer(0, {**payload, "data_dir": str(other)}).ready()
    # Refused before claiming the shard: the running shard 0 was not fenced.
    after = await cluster.shard_info(0)
    assert (after["epoch"], after["fenced"]) == (before["epoch"], False)


async def test_cluster_stop_leaves_nothing_behind_and_a_restart_resumes(
    cluster: Cluster,
) -> None:
    """Issue 18 item 4: `cluster stop` (once the gateways are stopped)
    snapshots every actor, ends every shard and recorder, and leaves no
    database connection; the next gateway resumes the session from its snapshot."""
    gw = await cluster.gateway()
    customer, notary, sid = await assigned_session(gw)
    await gw.close(timeout=30)
    cluster.gateways.remove(gw)

    stopped = await run_cli(cluster, "stop")
    assert [s["shard"] for s in stopped["shards"]] == list(range(SHARDS))
    assert all(s["snapshotted"] is not None for s in stopped["shards"]), stopped
    assert sum(s["snapshotted"] for s in stopped["shards"]) >= 3  # session, notary, matchmaker
    for k in range(SHARDS):
        with pytest.raises(ValueError):
            await asyncio.to_thread(cluster.shard, k)
    conn = await asyncpg.connect(cluster.database)
    try:
        others = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for _ in range(100):  # a killed process's backends end on their own, soon
            left = await conn.fetchval(others)
            if not left:
                break
            await asyncio.sleep(0.1)
        assert left == 0, f"{left} connections still held"
        snapshot = await conn.fetchval(
            "SELECT state->'state'->>'state' FROM snapshots WHERE actor_id = $1",
            f"session:{sid}",
        )
        assert snapshot == "ENP_ASSIGNED"
    finally:
        await conn.close()

    again = await cluster.gateway()
    customer = await again.client("c1", "customer")
    notary = await again.client("n1", "enp")
    joined = await customer.call(
        "session.join",
        {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH},
    )
    assert joined["session"]["state"] == "ENP_ASSIGNED"
    await notary.call("session.join", {"session_id": sid, "location": PH})
    await run_video_to_completion(customer, notary, sid)


async def test_metrics_carry_each_shards_figures_and_ready_names_a_dead_shard(
    make_cluster_server: MakeServer,
) -> None:
    """Issue 18 item 5: in cluster mode the work happens in the shards; the
    gateway's /metrics carries each one's actors, mailboxes and journal with a
    `shard` label, and /ready's 503 names the shard that does not answer."""
    h = await make_cluster_server()
    _, _, sid = await assigned_session(h)
    status, body = await http_call(h, "GET", "/ready")  # a fresh look at the shards
    assert status == 200, body
    m = await scrape(h)
    shards = [str(k) for k in range(2)]
    assert all(value(m, "enf_shard_up", shard=k) == 1 for k in shards)
    assert sum(value(m, "enf_shard_actors", shard=k) for k in shards) >= 3
    assert sum(value(m, "enf_shard_journal_appends", shard=k) for k in shards) >= 3
    assert all(("enf_shard_mailbox_max", (("shard", k),)) in m for k in shards)

    # One shard is ended for good: /ready says which.
    namespace = h.settings.ray_namespace
    dead = shard_of(f"session:{sid}", 2)
    handle = await asyncio.to_thread(ray.get_actor, shard_name(dead), namespace=namespace)
    ray.kill(handle, no_restart=True)
    for _ in range(50):  # polled: the kill takes effect on its own time
        status, body = await http_call(h, "GET", "/ready")
        if status == 503:
            break
        await asyncio.sleep(0.2)
    assert status == 503 and f"shard {dead}" in body["checks"]["ray"], body
    m = await scrape(h)
    assert value(m, "enf_shard_up", shard=str(dead)) == 0

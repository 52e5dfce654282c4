"""Issue 7, done-when 1-4: gateways as `python run.py` processes with
ENF_CLUSTER=ray on a local Ray cluster, real Redis, real Postgres.

1. Two gateways: a customer on one and a notary on the other complete a session.
2. SIGKILL of the shard process of a live session: Ray restarts it, the
   session re-activates from the journal, both clients go on with no lost
   or duplicated event.
3. SIGKILL of a gateway: its notary goes offline after lease + grace; its
   clients reconnect to the other gateway and resume with since_seq.
4. A second incarnation of a shard started by hand: the newest claim wins,
   the stale one cannot write and stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import ray

from cluster.ops import add_ray_node
from cluster.raycluster import connect_ray, kill_shards, settings_payload, shard_name
from cluster.shard import ShardServer
from config.settings import Settings
from core.ids import shard_of
from core.messages import Caller, Message
from gateway.client import EnfClient, RequestFailed
from persistence.keys import KeyFileError, Keys
from persistence.pool import create_pool
from persistence.verify import verify_journal
from tests.conftest import MakeServer
from tests.flows import (
    PH,
    assert_gapless,
    assigned_session,
    distribute_to_completion,
    end_and_notarize,
    http_call,
    join_both,
    online_notary,
    passed_checks,
    request_session,
    run_video_to_completion,
    session_events,
)
from tests.functional.test_ops import scrape, value
from tests.served import Served
from tests.server_process import ServerProcess, run_py_async, server_env

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SHARDS = 2
LEASE_S = 2.0
GRACE_S = 1.0


class Cluster:
    def __init__(self, database: str, tmp: Path, ray_address: str, redis_url: str) -> None:
        self.database = database
        self.tmp = tmp
        self.namespace = f"t-{uuid.uuid4().hex[:10]}"
        self.env = server_env(
            database,
            tmp,
            ENF_CLUSTER="ray",
            ENF_RAY_ADDRESS=ray_address,
            ENF_RAY_NAMESPACE=self.namespace,
            ENF_REDIS_URL=redis_url,
            ENF_SHARDS=str(SHARDS),
            ENF_PRESENCE_LEASE_S=str(LEASE_S),
            ENF_RECONNECT_GRACE_S=str(GRACE_S),
            ENF_LOG_FORMAT="console",
        )
        values: dict[str, Any] = {
            k[4:].lower(): v for k, v in self.env.items() if k.startswith("ENF_")
        }
        self.settings = Settings(**values)
        self.gateways: list[ServerProcess] = []

    async def gateway(self) -> ServerProcess:
        """One more gateway process (it quacks like the in-process Harness for tests.flows)."""
        g = ServerProcess(self.env, self.tmp / f"gateway-{len(self.gateways)}.log")
        await g.start(timeout=120)
        self.gateways.append(g)
        return g

    def shard(self, index: int) -> Any:
        """The shard's Ray actor handle (Ray's calls block: in a thread)."""
        connect_ray(self.settings)
        return ray.get_actor(shard_name(index), namespace=self.namespace)

    async def shard_info(self, index: int) -> dict[str, Any]:
        handle = await asyncio.to_thread(self.shard, index)
        info: dict[str, Any] = await handle.info.remote()
        return info

    async def close(self) -> None:
        for g in self.gateways:
            await g.close(timeout=30)
        await asyncio.to_thread(connect_ray, self.settings)
        await kill_shards(self.namespace, SHARDS)


@pytest.fixture
async def cluster(
    database: str, tmp_path: Path, ray_cluster: str, redis_url: str
) -> AsyncIterator[Cluster]:
    c = Cluster(database, tmp_path, ray_cluster, redis_url)
    try:
        yield c
    finally:
        await c.close()


async def retry(
    client: EnfClient, kind: str, data: dict[str, Any], rid: str, timeout: float = 60.0
) -> Any:
    """A client's retry after `unavailable`: the same request id, so it is
    applied once whatever happened to the first try."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.call(kind, data, id=rid, timeout=15)
        except RequestFailed as exc:
            if exc.code != "unavailable" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def journal_names(database: str, actor_id: str) -> list[str]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT name FROM journal WHERE actor_id = $1 ORDER BY seq", actor_id
        )
    finally:
        await conn.close()
    return [r["name"] for r in rows]


async def test_two_gateways_one_session(cluster: Cluster) -> None:
    gw_a = await cluster.gateway()
    gw_b = await cluster.gateway()
    notary = await online_notary(gw_b, "n1")
    watcher = await gw_a.client("watch", "customer")
    listed = await watcher.call("presence.subscribe")
    # Presence crosses gateways: n1 went online on B, A's subscriber sees it.
    assert listed == {"notaries": [{"notary_id": "n1", "status": "available"}]}
    customer = await gw_a.client("c1", "customer")
    ranked = await customer.call("notaries.available", {"document_type": "affidavit"})
    assert [n["notary_id"] for n in ranked["notaries"]] == ["n1"]

    sid = await request_session(customer)
    # The offer, made by the Matchmaker's shard, reaches the notary on B.
    offer = await notary.expect("offer", session_id=sid)
    await watcher.expect("notary.presence", notary_id="n1", status="busy")
    await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    await customer.expect("session.state", state="ENP_ASSIGNED")
    await run_video_to_completion(customer, notary, sid)
    assert_gapless(session_events(customer, sid))
    names = await journal_names(cluster.database, f"session:{sid}")
    assert names.count("session.state") == 8


async def test_shard_killed_under_a_live_session(cluster: Cluster) -> None:
    gw = await cluster.gateway()
    customer, notary, sid = await assigned_session(gw)
    await join_both(customer, notary, sid)
    await notary.call("video.start", {"session_id": sid})
    await customer.expect("session.state", state="VIDEO_IN_PROGRESS")
    first_seen = session_events(customer, sid)[0]["seq"]

    index = shard_of(f"session:{sid}", SHARDS)
    before = await cluster.shard_info(index)
    os.kill(before["pid"], signal.SIGKILL)

    # Ray restarts the process; the shard starts by itself (claims a new
    # epoch, recovers its actors) before anyone sends it anything.
    after = before
    for _ in range(300):
        try:
            after = await asyncio.wait_for(cluster.shard_info(index), 5)
        except Exception:
            after = before
        if after["pid"] != before["pid"] and after["epoch"] > before["epoch"]:
            break
        await asyncio.sleep(0.1)
    assert after["pid"] != before["pid"] and after["epoch"] > before["epoch"], after

    # Requests go on (a retry by id, in case the first try met the restart).
    checks = passed_checks(sid)
    assert await retry(notary, "checks.record", checks, "chk-1") == {}
    # A retry of an applied request is answered, not applied again.
    assert await retry(notary, "checks.record", checks, "chk-1") == {}
    await retry(customer, "act.sign", {"session_id": sid, "signature": "c2ln"}, "sign-1")
    await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
    await end_and_notarize(customer, notary, sid)
    await distribute_to_completion(customer, notary, sid)

    # Both connections saw every event once, in order, across the restart.
    assert_gapless(session_events(customer, sid), first_seen)
    assert_gapless(session_events(notary, sid), session_events(notary, sid)[0]["seq"])
    names = await journal_names(cluster.database, f"session:{sid}")
    assert names.count("checks.recorded") == 1 and names.count("act.signed") == 1
    assert session_events(customer, sid)[-1]["seq"] == len(names)


async def test_gateway_killed(cluster: Cluster) -> None:
    gw_a = await cluster.gateway()
    gw_b = await cluster.gateway()
    customer, notary, sid = await assigned_session(gw_a)
    await join_both(customer, notary, sid)
    notary_topic_last = max(e["seq"] for e in notary.events if e["topic"] == "notary:n1")
    cust_last = session_events(customer, sid)[-1]["seq"]
    notary_last = session_events(notary, sid)[-1]["seq"]
    watcher = await gw_b.client("watch", "customer")
    listed = await watcher.call("presence.subscribe")
    assert {"notary_id": "n1", "status": "busy"} in listed["notaries"]

    gw_a.kill()
    killed_at = time.monotonic()
    await gw_a.wait_dead()
    # Nobody closed n1's socket: its lease lapses, then the grace runs out.
    await watcher.expect("notary.presence", notary_id="n1", status="offline", timeout=30)
    assert time.monotonic() - killed_at >= LEASE_S + GRACE_S - 0.5

    # Both reconnect to the other gateway and resume where they were.
    customer = await gw_b.client("c1", "customer")
    notary = await gw_b.client("n1", "enp")
    back = await notary.call("presence.online", {"since_seq": notary_topic_last})
    assert back["status"] == "busy"  # still has its session
    await watcher.expect("notary.presence", notary_id="n1", status="busy")
    snap = await customer.call("session.join", {"session_id": sid, "since_seq": cust_last})
    assert snap["session"]["state"] == "ENP_ASSIGNED"
    await notary.call("session.join", {"session_id": sid, "since_seq": notary_last})
    await run_video_to_completion(customer, notary, sid)
    assert_gapless(session_events(customer, sid), cust_last + 1)
    assert_gapless(session_events(notary, sid), notary_last + 1)


@pytest.mark.expects_server_errors(
    "a second incarnation of a shard fences the first: both refusals are logged",
    match=r"journal write refused: shard \d+ is at epoch|was fenced by a newer incarnation",
)
async def test_double_activation_is_fenced(cluster: Cluster) -> None:
    gw = await cluster.gateway()
    customer, notary, sid = await assigned_session(gw)
    actor = f"session:{sid}"
    index = shard_of(actor, SHARDS)
    ray_shard = await cluster.shard_info(index)

    # A second incarnation of the same shard, started by hand in this process.
    by_hand = ShardServer(index, settings_payload(cluster.settings, cluster.database))
    claimed = await by_hand.ready()
    assert claimed["epoch"] > ray_shard["epoch"]
    try:
        c1 = Caller("c1", "customer", "hand-conn", "hand-1", True, {})
        join = Message("session.join", {"session_id": sid, "location": PH}, c1)
        [(status, _, _)] = await by_hand.deliver("test", 0, [(actor, join, True)])
        assert status == "ok"  # the newest claim writes
        rows_after_hand = await journal_names(cluster.database, actor)

        # The Ray incarnation (older epoch) cannot append; it says so and stops.
        with pytest.raises(RequestFailed) as refused:
            await notary.call("session.join", {"session_id": sid, "location": PH}, id="nj-1")
        assert refused.value.code == "unavailable"
        assert await journal_names(cluster.database, actor) == rows_after_hand

        # Ray restarts it (the process exited); that claim is newer still, and
        # it re-activated from the journal, so it sees what the other one wrote.
        reply = await retry(notary, "session.join", {"session_id": sid, "location": PH}, "nj-1")
        restarted = await cluster.shard_info(index)
        assert restarted["pid"] != ray_shard["pid"]
        assert restarted["epoch"] > claimed["epoch"]
        assert reply["session"]["state"] == "ENP_ASSIGNED"
        # Its row follows the other one's: it loaded that row (the chain is
        # checked below; a fork would have hit the (actor_id, seq) key).
        assert await journal_names(cluster.database, actor) == [
            *rows_after_hand,
            "participant.joined",
        ]

        # Now the one started by hand is the stale one: it cannot write, and stops.
        leave = Message("session.leave", {"session_id": sid}, c1)
        [(status, code, _)] = await by_hand.deliver("test", 1, [(actor, leave, True)])
        assert (status, code) == ("err", "unavailable")
        assert by_hand.fenced and by_hand.info()["actors"] == 0
    finally:
        await by_hand.stop()

    pool = await create_pool(cluster.database, min_size=1, max_size=2)
    try:
        report = await verify_journal(pool, actor)
    finally:
        await pool.close()
    assert report.valid, report.describe()
    del customer


async def run_cli(cluster: Cluster, *args: str) -> Any:
    """`python run.py cluster ... --json` with the gateways' settings."""
    returncode, out, err = await run_py_async(
        "cluster", *args, "--json", env=cluster.env, timeout=180
    )
    assert returncode == 0, err.decode()[-3000:]
    return json.loads(out)


async def ready_within(h: Served, seconds: float) -> None:
    """`/ready` answers 200 within `seconds` (polled: nothing announces it)."""
    last: tuple[int, Any] = (0, None)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            async with http.get(h.url("/ready")) as resp:
                last = (resp.status, await resp.json())
            if last[0] == 200:
                return
            await asyncio.sleep(0.25)
    raise AssertionError(f"/ready not 200 within {seconds} s: {last}")


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


async def test_no_ray_cluster_is_a_clear_error_not_a_private_cluster(
    database: str, tmp_path: Path, redis_url: str, held_socket: socket.socket
) -> None:
    dead = held_socket.getsockname()[1]  # held, not listening: refused
    env = server_env(
        database,
        tmp_path,
        ENF_CLUSTER="ray",
        ENF_REDIS_URL=redis_url,
        ENF_RAY_ADDRESS=f"127.0.0.1:{dead}",  # nothing listens there
    )
    returncode, out, err = await run_py_async(env=env, timeout=60)
    assert returncode == 2
    assert b"listening" not in out
    assert b"cannot start: ENF_CLUSTER=ray: no Ray cluster answers at" in err


async def test_postgres_connections_cut_under_a_live_session(
    make_cluster_server: MakeServer, database: str
) -> None:
    """Every connection to the database is killed (Postgres restarting, a
    failover): requests that could not be made durable get `unavailable`,
    their retries by id go through, and nothing is applied twice."""
    h = await make_cluster_server()
    customer, notary, sid = await assigned_session(h)
    admin = await asyncpg.connect(database)
    try:
        cut = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert cut >= 3  # the gateway's pool and each shard's

    join = {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH}
    first = await customer.request("session.join", join, id="cj-1", timeout=30)
    assert first["ok"] or first["error"]["code"] == "unavailable", first
    await retry(customer, "session.join", join, "cj-1")
    await retry(notary, "session.join", {"session_id": sid, "location": PH}, "nj-1")
    await run_video_to_completion(customer, notary, sid)
    names = await journal_names(database, f"session:{sid}")
    assert names.count("session.state") == 8
    conn = await asyncpg.connect(database)
    try:
        joined = await conn.fetch(
            "SELECT data->>'user_id' AS u FROM journal WHERE actor_id = $1"
            " AND name = 'participant.joined'",
            f"session:{sid}",
        )
    finally:
        await conn.close()
    # The customer's join, tried and retried as cj-1 (and joined again later with
    # nothing new), was applied once.
    assert [r["u"] for r in joined].count("c1") == 1


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

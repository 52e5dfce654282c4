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
import os
import signal
import socket
import time
from pathlib import Path

import asyncpg
import pytest
from enf_client import RequestFailed

from cluster.raycluster import settings_payload
from cluster.shard import ShardServer
from core.ids import shard_of
from core.messages import Caller, Message
from persistence.pool import create_pool
from persistence.verify import verify_journal
from tests.cluster.clusters import (
    GRACE_S,
    LEASE_S,
    SHARDS,
    Cluster,
    journal_names,
    retry,
)
from tests.conftest import MakeServer
from tests.flows import (
    PH,
    assert_gapless,
    assigned_session,
    distribute_to_completion,
    end_and_notarize,
    get_json,
    join_both,
    online_notary,
    passed_checks,
    request_session,
    run_video_to_completion,
    session_events,
)
from tests.served import Served
from tests.server_process import run_py_async, server_env

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


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

    # The gateway tells the restarted shard's session both sockets are still
    # open (PROTOCOL §5: the act steps wait for the parties to be connected).
    await until_both_online(gw, sid)
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


async def until_both_online(gw: Served, sid: str, timeout: float = 30.0) -> None:
    admin = gw.token("admin-1", "admin")
    deadline = time.monotonic() + timeout
    while True:
        status, snap = await get_json(gw, f"/v1/sessions/{sid}", admin)
        online = status == 200 and all(p["online"] for p in snap["participants"])
        if online or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert online, snap


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

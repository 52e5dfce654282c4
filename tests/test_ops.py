"""Operations: /metrics parses with prometheus_client's parser and moves as
a session proceeds; /ready reports its checks."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.flows import assigned_session, run_video_to_completion


async def scrape(h: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(h.url("/metrics")) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move_as_a_session_proceeds(server):
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


async def test_ready_reports_its_checks(server):
    async with aiohttp.ClientSession() as s, s.get(server.url("/ready")) as r:
        body = await r.json()
    assert r.status == 200 and body == {"ready": True, "checks": {"database": "ok"}}

"""What operations watch, against a real server: HTTP calls counted by route
template, method and status (never a concrete path or id), notaries online
from presence, and every metric the alert rules (deploy/prometheus/) and the
Grafana dashboard (deploy/grafana/) query served by `GET /metrics`; and the
dashboard's shape (titles, datasource, queries, ids, positions)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.http import front_middleware
from gateway.metrics import Metrics
from gateway.services import SERVICES, Services
from tests.conftest import Harness, MakeServer
from tests.flows import assigned_session, http_call, in_the_call
from tests.functional.test_twilio import SID, TwilioStandIn, post_callback, twilio_server

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "enf-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "enf-dashboard.json"
# Read once here: the tests run on the event loop, where reading a file blocks.
RULES_DOC: dict[str, Any] = yaml.safe_load(RULES.read_text())
DASHBOARD_DOC: dict[str, Any] = json.loads(DASHBOARD.read_text())

Sample = tuple[str, dict[str, str], float]

# -- reading the scrape and PromQL -----------------------------------------------------


async def scrape(h: Harness) -> tuple[list[Sample], dict[str, str]]:
    """The samples of `/metrics`, and each metric family's type by name."""
    status, text = await http_call(h, "GET", "/metrics", content_type="text/plain")
    assert status == 200 and isinstance(text, str)
    samples: list[Sample] = []
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
    return samples, types


async def scrape_until(
    h: Harness, holds: Callable[[list[Sample]], bool], timeout: float = 20, every: float = 0.05
) -> list[Sample]:
    """Scrape until `holds`, as tests.flows.eventually does (for what no event
    announces: a row's outcome, written after the receiver answered)."""
    samples: list[Sample] = []
    for _ in range(int(timeout / every)):
        samples, _ = await scrape(h)
        if holds(samples):
            return samples
        await asyncio.sleep(every)
    raise AssertionError(f"not true after {timeout} s: {samples}")


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, lb, v in samples if n == name and lb == labels]
    return found[0] if found else 0.0


def series_names(samples: list[Sample], types: dict[str, str]) -> set[str]:
    """The names PromQL can select: each sample's, and those a family without
    samples yet (no label set seen) will have: a counter's `_total`, a
    histogram's `_bucket`, `_sum`, `_count`, a gauge's own name."""
    names = {n for n, _, _ in samples}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family, kind in types.items():
        names |= {family + s for s in suffixes.get(kind, ())}
    return names


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
SELECTOR = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?")


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """The metric names an expression selects, each with the label names its
    matchers use; functions, aggregations, keywords, grouping labels and
    ranges are left out."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    found = []
    for m in SELECTOR.finditer(e):
        name, matchers = m.group(1), m.group(2) or ""
        if e[m.end(1) :].lstrip().startswith("(") or name.lower() in KEYWORDS:
            continue
        found.append((name, set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))))
    return found


def test_selectors_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (route, le) (rate(enf_x_bucket{route!~"/a|/b"}[5m])))'
        ' / (sum(rate(enf_y_total{status=~"5..", method="GET"}[$__rate_interval])) or vector(0))'
        " > 2 and on (instance) enf_z offset 1e3m"
    )
    assert selectors(expr) == [
        ("enf_x_bucket", {"route"}),
        ("enf_y_total", {"status", "method"}),
        ("enf_z", set()),
    ]


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel's targets and every rule."""
    found = [
        (f"panel {p['title']!r}", t["expr"]) for p in DASHBOARD_DOC["panels"] for t in p["targets"]
    ]
    for group in RULES_DOC["groups"]:
        found += [(f"alert {r['alert']}", r["expr"]) for r in group["rules"]]
    return found


# -- the tests -------------------------------------------------------------------------


async def test_http_calls_are_counted_by_route_template(server: Harness) -> None:
    admin = server.token("ops", "admin")
    missing = "/v1/sessions/no-such-session"
    assert (await http_call(server, "GET", missing, admin))[0] == 404
    assert (await http_call(server, "GET", missing))[0] == 401
    assert (await http_call(server, "GET", "/health"))[0] == 200
    assert (await http_call(server, "GET", "/no/such/path"))[0] == 404
    assert (await http_call(server, "POST", "/health"))[0] == 405
    assert (await http_call(server, "PROPFIND", "/health"))[0] == 405  # WebDAV
    big = {"envelope": "x" * 100_000}
    assert (await http_call(server, "POST", "/v1/envelopes/verify", json=big))[0] == 413
    customer = await server.client("cust-1", "customer")  # the upgrade is not counted
    assert (await customer.request("presence.subscribe", {}))["ok"]

    samples, _ = await scrape(server)
    calls = "enf_http_requests_total"
    route = "/v1/sessions/{id}"
    assert value(samples, calls, route=route, method="GET", status="404") == 1
    assert value(samples, calls, route=route, method="GET", status="401") == 1
    assert value(samples, calls, route="/health", method="GET", status="200") == 1
    assert value(samples, calls, route="other", method="GET", status="404") == 1
    assert value(samples, calls, route="other", method="POST", status="405") == 1
    assert value(samples, calls, route="other", method="other", status="405") == 1
    assert value(samples, calls, route="/v1/envelopes/verify", method="POST", status="413") == 1
    seconds = "enf_http_request_seconds"
    assert value(samples, f"{seconds}_count", route=route, method="GET") == 2
    assert value(samples, f"{seconds}_bucket", route=route, method="GET", le="+Inf") == 2
    assert value(samples, f"{seconds}_sum", route=route, method="GET") > 0
    http = [lb for n, lb, _ in samples if n.startswith("enf_http_request")]
    assert {lb["route"] for lb in http} == {
        route,
        "/health",
        "other",
        "/v1/envelopes/verify",
    }, "the WebSocket upgrade, a concrete path or an id in a label"
    assert not any("no-such" in v or "PROPFIND" in v for _, lb, _ in samples for v in lb.values())
    # This scrape is counted once it is answered: the next one shows it.
    again, _ = await scrape(server)
    assert value(again, calls, route="/metrics", method="GET", status="200") == 1


async def test_an_http_exception_passing_through_is_counted_with_its_status() -> None:
    """What the JSON errors layer lets through (a redirect, an error that is
    JSON already) is raised past the front middleware, and counted there."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def conflict(request: web.Request) -> web.Response:
        raise web.HTTPConflict(text='{"error": {}}', content_type="application/json")

    app = web.Application(middlewares=[front_middleware])
    metrics = Metrics()
    app[SERVICES] = cast(Services, SimpleNamespace(metrics=metrics))
    app.router.add_get("/health", redirect)  # a probe: no limits, no audit row
    app.router.add_get("/ready", conflict)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/health"), allow_redirects=False) as r:
                assert r.status == 302
            async with http.get(server.make_url("/ready")) as r:
                assert r.status == 409
    finally:
        await server.close()
    samples = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    ]
    calls = "enf_http_requests_total"
    assert value(samples, calls, route="/health", method="GET", status="302") == 1
    assert value(samples, calls, route="/ready", method="GET", status="409") == 1


async def test_notaries_online_follow_presence(server: Harness) -> None:
    samples, _ = await scrape(server)
    online = "enf_notaries_online"
    assert [value(samples, online, status=s) for s in ("available", "away", "busy")] == [0, 0, 0]
    notary = await server.client("atty-1", "enp")
    assert (await notary.request("presence.online", {}))["ok"]
    samples, _ = await scrape(server)
    assert value(samples, online, status="available") == 1
    assert value(samples, "enf_connections", role="enp") == 1
    assert (await notary.request("presence.set", {"status": "away"}))["ok"]
    samples, _ = await scrape(server)
    assert value(samples, online, status="available") == 0
    assert value(samples, online, status="away") == 1
    assert (await notary.request("presence.offline", {}))["ok"]
    samples, _ = await scrape(server)
    assert value(samples, online, status="away") == 0


async def test_a_recording_awaited_after_video_end(
    make_server: MakeServer, twilio_api: TwilioStandIn
) -> None:
    """With ENF_RECORDING=required (Twilio's rooms: the recording comes by
    callback), a session past video.end is counted until its recording is
    ready."""
    h = await twilio_server(make_server, twilio_api)
    video = h.services.video
    assert video is not None
    video.callback_url = h.url("/webhooks/twilio/status")
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    samples, _ = await scrape(h)
    assert ("enf_recordings_awaited", {}, 0.0) in samples

    room = {"RoomSid": "RM" + "3" * 32, "RoomName": sid, "AccountSid": SID}
    rec = {**room, "RecordingSid": "RT" + "4" * 32, "ParticipantIdentity": "c1"}
    rec |= {"Type": "video", "Container": "mkv", "Duration": "42"}
    assert await post_callback(h, {**rec, "StatusCallbackEvent": "recording-started"}) == 204
    await customer.expect("recording.started")

    await notary.call("video.end", {"session_id": sid})
    samples, _ = await scrape(h)
    assert value(samples, "enf_recordings_awaited") == 1
    assert 0 <= value(samples, "enf_recording_wait_seconds_max") < 60

    assert await post_callback(h, {**room, "StatusCallbackEvent": "room-ended"}) == 204
    assert await post_callback(h, {**rec, "StatusCallbackEvent": "recording-completed"}) == 204
    await customer.expect("recording.ready", timeout=20)
    samples, _ = await scrape(h)
    assert value(samples, "enf_recordings_awaited") == 0
    assert value(samples, "enf_recording_wait_seconds_max") == 0


async def test_payment_event_attempts_are_told_apart(make_server: MakeServer) -> None:
    """A webhook receiver refuses the first payment.hold once (503): the
    outbox figures show one failed and one delivered payment attempt, and
    the other events delivered at the first attempt."""
    refused: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if event["type"].startswith("payment.") and not refused:
            refused.append(event["type"])
            return web.Response(status=503)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = TestServer(app, host="127.0.0.1", port=0)
    await receiver.start_server()
    try:
        h = await make_server(
            webhook_url=str(receiver.make_url("/hook")),
            webhook_secret="webhook-secret-for-tests-0123456789",
            delivery_base_s=0.01,
        )
        await assigned_session(h)  # REQUESTED, ENP_ASSIGNED and its payment.hold
        attempts = "enf_outbox_attempts"
        samples = await scrape_until(
            h,
            lambda m: (
                value(m, attempts, kind="payment", result="delivered") == 1
                and value(m, "enf_outbox", status="pending") == 0
            ),
        )
    finally:
        await receiver.close()
    assert refused == ["payment.hold"]
    assert value(samples, attempts, kind="payment", result="failed") == 1
    assert value(samples, attempts, kind="webhook", result="failed") == 0
    assert value(samples, attempts, kind="webhook", result="delivered") >= 2
    assert value(samples, "enf_delivery_events", kind="failures") == 1


async def test_every_metric_the_alerts_and_dashboard_query_is_served(server: Harness) -> None:
    # Some traffic first, so the labelled families have samples to check
    # the queries' label names against.
    assert (await http_call(server, "GET", "/health"))[0] == 200
    customer = await server.client("cust-1", "customer")
    assert (await customer.request("presence.subscribe", {}))["ok"]
    samples, types = await scrape(server)
    served = series_names(samples, types)
    labels: dict[str, set[str]] = {}
    for name, lb, _ in samples:
        labels.setdefault(name, set()).update(lb)

    checked = 0
    for where, expr in queries():
        found = selectors(expr)
        assert found, f"{where}: no metric in {expr!r}"
        for name, used in found:
            assert name in served, f"{where}: {name} is not served by /metrics"
            if name in labels:
                assert used <= labels[name], f"{where}: {name} has no label {used - labels[name]}"
            checked += 1
    assert checked > 30


def test_the_dashboard_is_well_formed() -> None:
    d = DASHBOARD_DOC
    assert d["title"] and d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["title"].strip(), p["id"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
        g = p["gridPos"]
        assert {"x", "y", "w", "h"} <= g.keys() and g["w"] > 0 and g["h"] > 0, p["title"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
    titles = " | ".join(p["title"].lower() for p in panels)
    for subject in (
        "request rate",
        "latency",
        "error rate",
        "active users",
        "sessions by state",
        "notaries online",
        "match latency",
        "journal batches",
        "database pool",
        "recorder streams",
    ):
        assert subject in titles, f"no panel for {subject}"
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs

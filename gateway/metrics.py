"""Prometheus metrics (`GET /metrics`), one registry per server.

Counted where things happen: connections, WebSocket requests and their
latency, HTTP calls and their latency (by route template, never the concrete
path: gateway.http.front), outbound drops and slow-client closes, match
latency, journal batches, recorder failures. Read at scrape time
(gateway.scrape): sessions by state, offers by outcome, outbox rows and
delivery attempts, recordings awaited (from Postgres), notaries online (the
Matchmaker's presence), mailbox depth and active actors, delivery counters,
recorder streams, the audit backlog, pool usage. No label carries a session
or user id.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.requests import REQUESTS

logger = logging.getLogger(__name__)

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def request_label(kind: str) -> str:
    """Request types are a closed set; anything else is `other` (bounded labels)."""
    return kind if kind in REQUESTS or kind == "frame" else "other"


# HTTP methods a client may send are any token: the known ones, else `other`.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


# The per-shard gauges of cluster mode (label `shard`), from each shard's info.
SHARD_FIGURES = {
    "up": "1 when the shard answered the gateway's last look",
    "fenced": "1 when a newer incarnation owns the shard",
    "actors": "Actors the shard hosts",
    "mailbox_max": "Deepest mailbox of the shard",
    "mailbox_total": "Messages queued in the shard",
    "journal_batches": "Group commits of the shard since it started",
    "journal_appends": "Appends committed by the shard since it started",
    "journal_write_seconds": "Seconds the shard's journal spent committing since it started",
}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("enf_connections", "Open WebSockets", ["role"], registry=r)
        self.requests = Counter(
            "enf_requests", "WebSocket requests", ["type", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "enf_request_seconds", "Request to reply", ["type"], buckets=LATENCY, registry=r
        )
        # Labelled children, kept (every label set here is closed): finding one
        # through `labels` costs as much as counting with it.
        self._children: dict[tuple[Any, ...], Any] = {}
        # HTTP calls (not the WebSocket upgrade): `route` is the route's
        # template (`/v1/sessions/{id}`), `other` for a path no route matches.
        self.http_requests = Counter(
            "enf_http_requests", "HTTP calls", ["route", "method", "status"], registry=r
        )
        self.http_request_seconds = Histogram(
            "enf_http_request_seconds",
            "HTTP call to response",
            ["route", "method"],
            buckets=LATENCY,
            registry=r,
        )
        self.outbound_dropped = Counter(
            "enf_outbound_dropped", "Ephemeral frames dropped for slow clients", registry=r
        )
        self.slow_clients = Counter(
            "enf_slow_client_disconnects", "Clients closed with 1013", registry=r
        )
        self.match_seconds = Histogram(
            "enf_match_seconds",
            "From REQUESTED to ENP_ASSIGNED",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=r,
        )
        self.journal_seconds = Histogram(
            "enf_journal_append_seconds", "One group commit", buckets=LATENCY, registry=r
        )
        self.journal_batch = Histogram(
            "enf_journal_batch_size",
            "Appends per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.recorder_failures = Counter("enf_recorder_failures", "Recordings failed", registry=r)
        self.offers_refused_by_session = Counter(
            "enf_offers_refused_by_session",
            "Offers the session refused (it no longer waited): the Matchmaker's queue was stale",
            registry=r,
        )
        # A request, connection or frame refused by a limit (README "Limits"):
        # ws_rate, ws_user_rate, ws_in_flight, ws_connections_per_user,
        # open_requests, http_user_rate, anon_rate.
        self.limit_refusals = Counter(
            "enf_limit_refusals", "Refusals by a limit", ["limit"], registry=r
        )
        self.audit_refusals_suppressed = Counter(
            "enf_audit_refusals_suppressed",
            "Refused frames counted in a summary audit row instead of a row each",
            registry=r,
        )
        # Read at scrape time.
        self.sessions = Gauge("enf_sessions", "Sessions by state", ["state"], registry=r)
        self.offers = Gauge("enf_offers", "Offers ever made, by outcome", ["state"], registry=r)
        self.actors = Gauge("enf_actors_active", "Active logical actors", registry=r)
        self.mailbox_max = Gauge("enf_mailbox_depth_max", "Deepest actor mailbox", registry=r)
        self.mailbox_total = Gauge("enf_mailbox_depth_total", "Messages queued", registry=r)
        self.recorder_streams = Gauge(
            "enf_recorder_sessions", "Sessions being recorded by this node", registry=r
        )
        self.deliveries = Gauge(
            "enf_delivery_events", "Delivery worker counters", ["kind"], registry=r
        )
        self.audit_refused = Gauge(
            "enf_audit_rows_refused",
            "Audit rows Postgres would not store, dropped (since start)",
            registry=r,
        )
        self.outbox = Gauge("enf_outbox", "Outbox rows by status", ["status"], registry=r)
        # kind: payment (payment.*), sms, webhook (the other events); result:
        # delivered (a row delivered: its one successful attempt), failed (every
        # other attempt). From the rows: a replayed row starts again at 0.
        self.outbox_attempts = Gauge(
            "enf_outbox_attempts",
            "Delivery attempts recorded in the outbox, by kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.audit_backlog = Gauge(
            "enf_audit_backlog", "Audit rows queued, not written to Postgres yet", registry=r
        )
        self.audit_dropped = Gauge(
            "enf_audit_rows_dropped",
            "Audit rows dropped because the backlog was full (since start)",
            registry=r,
        )
        # The Matchmaker's presence: notaries online, by status (available,
        # away, busy); an offline notary is not in it.
        self.notaries_online = Gauge(
            "enf_notaries_online", "Notaries online, by status", ["status"], registry=r
        )
        # With ENF_RECORDING=required: sessions past video.end whose recording
        # is not ready yet, and the longest such wait (0 when none).
        self.recordings_awaited = Gauge(
            "enf_recordings_awaited", "Sessions past video.end awaiting their recording", registry=r
        )
        self.recording_wait = Gauge(
            "enf_recording_wait_seconds_max",
            "Longest wait since video.end of a recording not ready yet",
            registry=r,
        )
        self.pool = Gauge("enf_db_pool_connections", "Postgres pool", ["state"], registry=r)
        # Cluster mode: each shard's figures, as of the gateway's last look
        # at the shards (every 5 s, and at each /ready).
        self.shard = {
            name: Gauge(f"enf_shard_{name}", text, ["shard"], registry=r)
            for name, text in SHARD_FIGURES.items()
        }

    def set_shards(self, figures: dict[int, dict[str, Any]]) -> None:
        for k, f in figures.items():
            label = str(k)
            self.shard["up"].labels(label).set(1 if f.get("up") else 0)
            self.shard["fenced"].labels(label).set(1 if f.get("fenced") else 0)
            for name in SHARD_FIGURES.keys() - {"up", "fenced"}:
                if name in f:
                    self.shard[name].labels(label).set(float(f[name]))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_request(self, label: str, outcome: str) -> None:
        """One WebSocket request (`label`: `request_label`) and its outcome."""
        self._child(self.requests, label, outcome).inc()

    def observe_request(self, label: str, seconds: float) -> None:
        """A WebSocket request's time from frame to reply."""
        self._child(self.request_seconds, label).observe(seconds)

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP call: `route` a template or `other`, `method` any token."""
        label = method_label(method)
        self._child(self.http_requests, route, label, str(status)).inc()
        self._child(self.http_request_seconds, route, label).observe(seconds)

    def observe_batch(self, appends: int, seconds: float) -> None:
        self.journal_batch.observe(appends)
        self.journal_seconds.observe(seconds)

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data

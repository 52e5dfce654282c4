"""What `GET /metrics` reads at scrape time: figures from Postgres (sessions
by state, offers by outcome, outbox rows and delivery attempts by kind and
status, recordings awaited after `video.end`), the Matchmaker's presence
(notaries online), the actor host, the recorder, the delivery worker, the
audit writer and the pool, set into the gauges of gateway.metrics."""

from __future__ import annotations

import asyncio
import logging

from actors import lifecycle as L
from core.ids import MATCHMAKER
from core.messages import Message
from gateway.metrics import Metrics
from gateway.services import Services
from persistence import stats

logger = logging.getLogger(__name__)

# The presence statuses of an online notary (actors.notary_presence).
ONLINE = ("available", "away", "busy")


async def refresh_metrics(services: Services) -> None:
    """Set the gauges read at scrape time from the services' current state."""
    m = services.metrics
    pool = services.pool
    await _from_database(services)
    await _notaries_online(services)
    depths = services.host.mailbox_depths()
    # Cluster mode: actors live in the shards (their counts as of the last
    # /ready or map check); mailboxes are not seen from here.
    m.actors.set(len(depths) or services.host.actor_count())
    m.mailbox_max.set(max(depths, default=0))
    m.mailbox_total.set(sum(depths))
    m.set_shards(services.host.shard_figures())
    m.recorder_streams.set(len(services.media.sessions) if services.media else 0)
    counters = services.deliveries.stats
    for kind in ("attempts", "delivered", "failures", "dead"):
        m.deliveries.labels(kind).set(getattr(counters, kind))
    m.audit_refused.set(services.audit.refused)
    m.audit_backlog.set(services.audit.backlog)
    m.audit_dropped.set(services.audit.dropped)
    m.pool.labels("open").set(pool.get_size())
    m.pool.labels("idle").set(pool.get_idle_size())
    m.pool.labels("max").set(pool.get_max_size())


async def _from_database(services: Services) -> None:
    pool = services.pool
    required = services.settings.recording == "required"
    try:
        async with asyncio.timeout(2):
            states = await stats.sessions_by_state(pool)
            offers = await stats.offers_by_state(pool)
            outbox = await stats.outbox_by_kind(pool)
            awaited = await stats.recordings_awaited(pool) if required else (0, 0.0)
    except Exception as exc:  # a scrape must still answer
        logger.warning("metrics: database unavailable: %s", exc)
        return
    m = services.metrics
    for st in L.STATES:
        m.sessions.labels(st).set(states.get(st, 0))
    for st in ("open", "accepted", "declined", "expired", "withdrawn"):
        m.offers.labels(st).set(offers.get(st, 0))
    _set_outbox(m, outbox)
    m.recordings_awaited.set(awaited[0])
    m.recording_wait.set(awaited[1])


def _set_outbox(m: Metrics, figures: list[stats.OutboxFigure]) -> None:
    """`enf_outbox{status}` (rows), and `enf_outbox_attempts{kind,result}`:
    a delivered row's attempts are one delivery and the failures before it;
    every attempt of a pending or dead row failed."""
    rows = dict.fromkeys(("pending", "delivered", "dead"), 0)
    attempts = {(k, r): 0 for k in stats.OUTBOX_KINDS for r in ("delivered", "failed")}
    for f in figures:
        rows[f.status] = rows.get(f.status, 0) + f.rows
        delivered = f.rows if f.status == "delivered" else 0
        attempts[f.kind, "delivered"] = attempts.get((f.kind, "delivered"), 0) + delivered
        attempts[f.kind, "failed"] = attempts.get((f.kind, "failed"), 0) + f.attempts - delivered
    for status, n in rows.items():
        m.outbox.labels(status).set(n)
    for (kind, result), n in attempts.items():
        m.outbox_attempts.labels(kind, result).set(n)


async def notaries_online(services: Services) -> dict[str, int] | None:
    """Online notaries by status, from the Matchmaker's presence list (None
    when it does not answer within 2 s: the caller answers without it)."""
    try:
        reply = await services.host.ask(MATCHMAKER, Message("presence_list"), timeout=2.0)
    except Exception as exc:
        logger.warning("presence unavailable: %s", exc)
        return None
    counts = dict.fromkeys(ONLINE, 0)
    for notary in reply["notaries"]:
        if notary["status"] in counts:  # a closed set (bounded labels)
            counts[notary["status"]] += 1
    return counts


async def _notaries_online(services: Services) -> None:
    """`enf_notaries_online{status}`."""
    counts = await notaries_online(services)
    for status, n in (counts or {}).items():
        services.metrics.notaries_online.labels(status).set(n)

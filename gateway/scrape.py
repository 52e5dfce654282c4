"""What `GET /metrics` reads at scrape time: figures from Postgres (sessions
by state, offers by outcome, outbox by status), the actor host, the recorder,
the delivery worker and the pool, set into the gauges of gateway.metrics."""

from __future__ import annotations

import asyncio
import logging

from actors import lifecycle as L
from gateway.services import Services
from persistence import stats

logger = logging.getLogger(__name__)


async def refresh_metrics(services: Services) -> None:
    """Set the gauges read at scrape time from the services' current state."""
    m = services.metrics
    pool = services.pool
    try:
        async with asyncio.timeout(2):
            states = await stats.sessions_by_state(pool)
            offers = await stats.offers_by_state(pool)
            outbox = await stats.outbox_by_status(pool)
    except Exception as exc:  # a scrape must still answer
        logger.warning("metrics: database unavailable: %s", exc)
    else:
        for st in L.STATES:
            m.sessions.labels(st).set(states.get(st, 0))
        for st in ("open", "accepted", "declined", "expired", "withdrawn"):
            m.offers.labels(st).set(offers.get(st, 0))
        for st in ("pending", "delivered", "dead"):
            m.outbox.labels(st).set(outbox.get(st, 0))
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
    m.pool.labels("open").set(pool.get_size())
    m.pool.labels("idle").set(pool.get_idle_size())
    m.pool.labels("max").set(pool.get_max_size())

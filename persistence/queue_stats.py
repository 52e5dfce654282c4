"""The matching queue as the ops page shows it (`GET /v1/ops/summary`): the
requests waiting for a notary and since when, and the match latency of the
recent assignments. (Sessions by state and offers by outcome are
persistence.stats's, shared with `/metrics`.)

The match latency is read from Postgres, not from the `enf_match_seconds`
histogram in memory: an accepted offer is resolved in the transaction that
assigns its session (ENP_ASSIGNED), so `offers.resolved_at - sessions.created_at`
is the wait from REQUESTED to ENP_ASSIGNED, the same for every gateway of a
cluster and across restarts."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Waiting:
    requests: int  # sessions in REQUESTED
    oldest_s: float | None  # how long the oldest has waited (None: none waits)


@dataclass(frozen=True, slots=True)
class MatchLatency:
    window_s: float  # assignments made within the last window_s seconds
    count: int
    median_s: float | None  # None when there were none
    p95_s: float | None
    max_s: float | None


_WAITING = (
    "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8"
    " FROM sessions WHERE state = 'REQUESTED'"
)

# The accepted offers resolved within the window, by their partial index on
# resolved_at (migration 0009).
_LATENCY = (
    "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY w),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY w), max(w)"
    " FROM (SELECT greatest(0, extract(epoch FROM o.resolved_at - s.created_at))::float8 AS w"
    " FROM offers o JOIN sessions s ON s.session_id = o.session_id"
    " WHERE o.state = 'accepted' AND o.resolved_at > now() - make_interval(secs => $1)) m"
)


async def requests_waiting(pool: asyncpg.Pool) -> Waiting:
    row = await pool.fetchrow(_WAITING)
    assert row is not None  # an aggregate always answers one row
    oldest = row[1]
    return Waiting(int(row[0]), None if oldest is None else max(0.0, float(oldest)))


async def match_latency(pool: asyncpg.Pool, window_s: float) -> MatchLatency:
    """REQUESTED to ENP_ASSIGNED, in seconds, over the assignments of the
    last `window_s` seconds."""
    row = await pool.fetchrow(_LATENCY, float(window_s))
    assert row is not None

    def seconds(v: float | None) -> float | None:
        return None if v is None else round(float(v), 3)

    return MatchLatency(
        float(window_s), int(row[0]), seconds(row[1]), seconds(row[2]), seconds(row[3])
    )

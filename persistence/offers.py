"""The `offers` projection: the rows a notary's and a session's commits write
to it (an offer opened, an open offer resolved; batched with the journal's
rows, `persistence.projections`) and the queries that read it back (a
notary's open offers, the offers made for waiting sessions)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from persistence.projections import OFFERS_OPENED, OFFERS_RESOLVED, Projection


def opened(offer_id: str, session_id: str, notary_id: str, expires_at: datetime) -> Projection:
    """The row recording a new open offer (for `commit(rows=...)`)."""
    return Projection(OFFERS_OPENED, (offer_id, session_id, notary_id, expires_at))


def resolved(offer_id: str, state: str) -> Projection:
    """The row moving an open offer to `state` (accepted, declined, expired,
    withdrawn); nothing for an offer already resolved."""
    return Projection(OFFERS_RESOLVED, (offer_id, state))


async def open_offers_of(pool: asyncpg.Pool, notary_id: str) -> list[dict[str, Any]]:
    """A notary's offers still open: offer_id, session_id, expires_at, created_at."""
    rows = await pool.fetch(
        "SELECT offer_id, session_id, expires_at, created_at FROM offers"
        " WHERE notary_id = $1 AND state = 'open'",
        notary_id,
    )
    return [dict(r) for r in rows]


async def offers_for(pool: asyncpg.Pool, session_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Every offer made for these sessions: offer_id, session_id, notary_id,
    state, expires_at."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT offer_id, session_id, notary_id, state, expires_at FROM offers"
        " WHERE session_id = ANY($1)",
        list(session_ids),
    )
    return rows


async def accepted_offer(pool: asyncpg.Pool, session_id: str, notary_id: str) -> str | None:
    """The offer of `session_id` that `notary_id` accepted, if any."""
    offer_id: str | None = await pool.fetchval(
        "SELECT offer_id FROM offers WHERE session_id = $1 AND notary_id = $2"
        " AND state = 'accepted'",
        session_id,
        notary_id,
    )
    return offer_id

"""The `offers` projection: the statements a notary's commits write to it
(an offer opened, an open offer resolved) and the queries that read it back
(a notary's open offers, the offers made for waiting sessions)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

_OPEN_SQL = (
    "INSERT INTO offers (offer_id, session_id, notary_id, state, created_at,"
    " expires_at) VALUES ($1, $2, $3, 'open', now(), $4)"
)
_RESOLVE_SQL = (
    "UPDATE offers SET state = $2, resolved_at = now() WHERE offer_id = $1 AND state = 'open'"
)


def opened(
    offer_id: str, session_id: str, notary_id: str, expires_at: datetime
) -> tuple[str, tuple[Any, ...]]:
    """The statement recording a new open offer (for `commit(statements=...)`)."""
    return _OPEN_SQL, (offer_id, session_id, notary_id, expires_at)


def resolved(offer_id: str, state: str) -> tuple[str, tuple[Any, ...]]:
    """The statement moving an open offer to `state` (accepted, declined,
    expired, withdrawn); a no-op on an offer already resolved."""
    return _RESOLVE_SQL, (offer_id, state)


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

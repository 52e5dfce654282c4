"""The directory of notaries and customers' favorites: notary profiles (set
by admins, read by the notary's actor), the notary's live response-time
average (written in its commits), and each customer's favorite notaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from persistence.projections import NOTARY_LIVE_AVG, Projection


def live_avg(notary_id: str, avg_s: float) -> Projection:
    """The row keeping a notary's live response-time average (for
    `commit(rows=...)`)."""
    return Projection(NOTARY_LIVE_AVG, (notary_id, avg_s))


async def notary_profile(pool: asyncpg.Pool, notary_id: str) -> asyncpg.Record | None:
    """The notary's `profile` and `live_avg_response_s`, or None if unknown."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT profile, live_avg_response_s FROM notaries WHERE notary_id = $1", notary_id
    )
    return row


async def put_notary_profile(pool: asyncpg.Pool, notary_id: str, profile: dict[str, Any]) -> None:
    """Create or replace a notary's profile."""
    await pool.execute(
        "INSERT INTO notaries (notary_id, profile) VALUES ($1, $2) ON CONFLICT (notary_id)"
        " DO UPDATE SET profile = $2, updated_at = now()",
        notary_id,
        profile,
    )


async def favorites_of(pool: asyncpg.Pool, customer_id: str) -> list[str]:
    """A customer's favorite notaries (none if never set)."""
    ids = await pool.fetchval(
        "SELECT notary_ids FROM favorites WHERE customer_id = $1", customer_id
    )
    return list(ids or ())


async def put_favorites(pool: asyncpg.Pool, customer_id: str, notary_ids: Sequence[str]) -> None:
    """Create or replace a customer's favorite notaries."""
    await pool.execute(
        "INSERT INTO favorites (customer_id, notary_ids) VALUES ($1, $2) ON CONFLICT"
        " (customer_id) DO UPDATE SET notary_ids = $2, updated_at = now()",
        customer_id,
        list(notary_ids),
    )

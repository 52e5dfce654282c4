"""Queries over the sessions projection (written by the session actors'
commits, persistence.projections)."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg


async def session_ids_in(pool: asyncpg.Pool, states: Iterable[str]) -> list[str]:
    """Sessions now in one of `states`."""
    rows = await pool.fetch("SELECT session_id FROM sessions WHERE state = ANY($1)", list(states))
    return [str(r["session_id"]) for r in rows]

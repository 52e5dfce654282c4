"""Counts read at scrape time for `/metrics`: sessions by state, offers by
outcome, outbox rows by status."""

from __future__ import annotations

import asyncpg


async def _counts(pool: asyncpg.Pool, sql: str) -> dict[str, int]:
    return dict(await pool.fetch(sql))


async def sessions_by_state(pool: asyncpg.Pool) -> dict[str, int]:
    return await _counts(pool, "SELECT state, count(*) FROM sessions GROUP BY 1")


async def offers_by_state(pool: asyncpg.Pool) -> dict[str, int]:
    return await _counts(pool, "SELECT state, count(*) FROM offers GROUP BY 1")


async def outbox_by_status(pool: asyncpg.Pool) -> dict[str, int]:
    return await _counts(pool, "SELECT status, count(*) FROM outbox GROUP BY 1")

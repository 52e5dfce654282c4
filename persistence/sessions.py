"""Queries over the sessions projection (written by the session actors'
commits, persistence.projections)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg


async def session_ids_in(pool: asyncpg.Pool, states: Iterable[str]) -> list[str]:
    """Sessions now in one of `states`."""
    rows = await pool.fetch("SELECT session_id FROM sessions WHERE state = ANY($1)", list(states))
    return [str(r["session_id"]) for r in rows]


async def waiting_requests(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Sessions still waiting for a notary (REQUESTED), oldest first: their
    session_id and request (what matching needs)."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT session_id, request FROM sessions WHERE state = 'REQUESTED' ORDER BY created_at"
    )
    return rows


async def waiting_with_favorites(
    pool: asyncpg.Pool, session_id: str, customer_id: str | None
) -> tuple[bool, list[str]]:
    """What matching a request needs, in one round trip: whether the session
    is still REQUESTED (its projection, written with its events), and its
    customer's favorite notaries (none if never set, or no customer)."""
    row = await pool.fetchrow(
        "SELECT (SELECT state FROM sessions WHERE session_id = $1) AS state,"
        " (SELECT notary_ids FROM favorites WHERE customer_id = $2) AS favorites",
        session_id,
        customer_id,
    )
    assert row is not None  # a SELECT without FROM: always one row
    return row["state"] == "REQUESTED", list(row["favorites"] or ())


async def active_session_of(pool: asyncpg.Pool, enp_id: str, released: Iterable[str]) -> str | None:
    """A session assigned to this notary and not in one of the `released` states."""
    session_id: str | None = await pool.fetchval(
        "SELECT session_id FROM sessions WHERE enp_id = $1 AND NOT state = ANY($2)",
        enp_id,
        list(released),
    )
    return session_id


async def state_of(pool: asyncpg.Pool, session_id: str) -> str | None:
    """A session's state, or None if there is no such session."""
    state: str | None = await pool.fetchval(
        "SELECT state FROM sessions WHERE session_id = $1", session_id
    )
    return state


async def parties(pool: asyncpg.Pool, session_id: str) -> asyncpg.Record | None:
    """A session's customer_id, enp_id and snapshot (who may see it, and what)."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT customer_id, enp_id, snapshot FROM sessions WHERE session_id = $1", session_id
    )
    return row


async def latest_snapshots(
    pool: asyncpg.Pool, state: str | None, limit: int
) -> list[dict[str, Any]]:
    """The snapshots of the `limit` latest sessions (in `state`, if given)."""
    if state is None:
        rows = await pool.fetch(
            "SELECT snapshot FROM sessions ORDER BY created_at DESC LIMIT $1", limit
        )
    else:
        rows = await pool.fetch(
            "SELECT snapshot FROM sessions WHERE state = $1 ORDER BY created_at DESC LIMIT $2",
            state,
            limit,
        )
    return [r["snapshot"] for r in rows]


async def open_requests_of(
    pool: asyncpg.Pool, customer_id: str, session_id: str
) -> tuple[int, bool]:
    """How many sessions of `customer_id` are in REQUESTED, and whether
    `session_id` exists (a repeated `session.request` names an existing one)."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM sessions WHERE customer_id = $1 AND state = 'REQUESTED')"
        " AS open, EXISTS (SELECT 1 FROM sessions WHERE session_id = $2) AS known",
        customer_id,
        session_id,
    )
    assert row is not None
    return int(row["open"]), bool(row["known"])

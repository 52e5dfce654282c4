"""The legal record as read back for export: a sealed TRUTH envelope (alone,
or with its session's customer and notary), and a notary's book entries
over a period. Both are written by the session actor's commits
(persistence.envelopes, persistence.book)."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def sealed_envelope(pool: asyncpg.Pool, envelope_id: str) -> str | None:
    """The envelope, still sealed, or None if there is no such envelope."""
    sealed: str | None = await pool.fetchval(
        "SELECT sealed FROM envelopes WHERE envelope_id = $1", envelope_id
    )
    return sealed


async def sealed_envelope_and_parties(
    pool: asyncpg.Pool, envelope_id: str
) -> asyncpg.Record | None:
    """The envelope (`sealed`) with its session's customer_id and enp_id."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT e.sealed, s.customer_id, s.enp_id FROM envelopes e"
        " JOIN sessions s ON s.session_id = e.session_id WHERE e.envelope_id = $1",
        envelope_id,
    )
    return row


async def book_entries(
    pool: asyncpg.Pool, notary_id: str, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """A notary's book entries with `start <= act_at < end`, in entry order."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT entry_no, session_id, complete, act_at, entry FROM notarial_book"
        " WHERE notary_id = $1 AND act_at >= $2 AND act_at < $3 ORDER BY entry_no",
        notary_id,
        start,
        end,
    )
    return rows

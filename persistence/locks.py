"""Postgres advisory locks and liveness: a lock held by a connection's
session (gone with the connection), and the one-round-trip check that a
connection or pool still answers."""

from __future__ import annotations

from typing import Any


async def ping(db: Any) -> None:
    """One round trip on a pool or a connection; raises if the database is away."""
    await db.fetchval("SELECT 1")


async def try_advisory_lock(conn: Any, key: int) -> bool:
    """Take the session-level advisory lock `key` on `conn`, if free."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def unlock_all(conn: Any) -> None:
    """Release every advisory lock this connection's session holds."""
    await conn.execute("SELECT pg_advisory_unlock_all()")

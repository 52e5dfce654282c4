"""Numbered SQL migrations (persistence/migrations/NNNN_name.sql), applied once each.

An advisory lock makes concurrent starters (several gateways) apply them once.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x454E46  # "ENF"


def migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("persistence.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text()))
    return sorted(found)


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; return the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        # Reading the packaged SQL files is file I/O: off the event loop.
        for version, name, sql in await asyncio.to_thread(migration_files):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            logger.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied

"""The asyncpg connection pool."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import orjson


def _encode_jsonb(value: Any) -> bytes:
    """jsonb's binary format: a version byte (1), then the JSON text. By
    orjson (every event, snapshot and reply the journal writes passes here);
    by `json` for what orjson does not take (integers past 64 bits)."""
    try:
        return b"\x01" + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return b"\x01" + json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _decode_jsonb(data: bytes) -> Any:
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns travel as Python objects, in the binary format (which
    # binary COPY needs too); compact text inside.
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection given back to the pool needs beyond asyncpg's own
    reset (an open transaction rolled back): nothing. asyncpg's default sends
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release, a round trip per pool use (a tenth of the server's CPU on a
    read, and a cap on the Matchmaker's rate). The server leaves no session
    state on a pooled connection: settings are `SET LOCAL`, cursors live in
    transactions, nothing LISTENs, and the two session-level advisory locks
    (migrations, the delivery leader) are released before their connection
    is (the leader terminates a connection it cannot unlock)."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool: Any = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
    )
    return pool

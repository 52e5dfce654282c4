"""The asyncpg connection pool."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
import orjson


def compact_json(value: Any) -> bytes:
    """JSON text by orjson; by `json` for what orjson does not take (integers
    past 64 bits), datetimes written as orjson writes them. What the journal
    writes to jsonb, and its batches' rows, go through here."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, default=_datetime_text
        ).encode()


def _datetime_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _encode_jsonb(value: Any) -> bytes:
    """jsonb's binary format: a version byte (1), then the JSON text."""
    return b"\x01" + compact_json(value)


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

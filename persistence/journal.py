"""The event journal: hash-chained rows per actor, appended by group commit.

Actors hand complete appends (events already numbered and hashed, plus the
rows that must commit with them: projections, idempotency records, a
snapshot) to `Journal.append`, which resolves once they are committed
(`persistence.journal_writer`). The rows, the hash chain and the errors are
in `persistence.events`; this module adds the reads, and is where the rest of
the server imports the journal's names from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from core.clock import iso
from persistence.events import (
    CONNECTION_ERRORS,
    GENESIS_HASH,
    Append,
    Fenced,
    IdempotencyRecord,
    StaleActivation,
    StoredEvent,
    Unavailable,
    canonical_json,
    chain_hash,
)
from persistence.journal_writer import GroupCommit, JournalStats, batch_sql

__all__ = [
    "GENESIS_HASH",
    "Append",
    "Fenced",
    "IdempotencyRecord",
    "Journal",
    "JournalStats",
    "StaleActivation",
    "StoredEvent",
    "Unavailable",
    "batch_sql",
    "canonical_json",
    "chain_hash",
]


class Journal(GroupCommit):
    """Appends by group commit (`GroupCommit`), and the reads of what they wrote."""

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def read(
        self, actor_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        sql = (
            "SELECT seq, name, data, at, prev_hash, hash FROM journal"
            " WHERE actor_id = $1 AND seq > $2 ORDER BY seq"
        )
        args: list[Any] = [actor_id, after_seq]
        if limit is not None:
            sql += " LIMIT $3"
            args.append(limit)
        rows = await self._fetch(sql, *args)
        return [_row_event(actor_id, r) for r in rows]

    async def load_snapshot(self, actor_id: str) -> tuple[int, dict[str, Any]] | None:
        rows = await self._fetch("SELECT seq, state FROM snapshots WHERE actor_id = $1", actor_id)
        return None if not rows else (rows[0]["seq"], rows[0]["state"])

    async def load_idempotency(self, actor_id: str) -> list[IdempotencyRecord]:
        rows = await self._fetch(
            "SELECT user_id, request_id, fingerprint, reply FROM idempotency WHERE actor_id = $1",
            actor_id,
        )
        return [
            IdempotencyRecord(r["user_id"], r["request_id"], r["fingerprint"], r["reply"])
            for r in rows
        ]

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A read, tried twice: a pooled connection found dead (cut while idle)
        is not an outage, the next one from the pool is new. Unavailable when
        the second try fails too."""
        for attempt in (1, 2):
            try:
                return list(await self._pool.fetch(sql, *args))
            except CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise Unavailable("database unavailable") from exc
        raise AssertionError("unreachable")


def _row_event(actor_id: str, r: asyncpg.Record) -> StoredEvent:
    at: datetime = r["at"]
    return StoredEvent(actor_id, r["seq"], r["name"], r["data"], iso(at), r["prev_hash"], r["hash"])

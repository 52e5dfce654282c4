"""The event journal: hash-chained rows per actor, appended by group commit.

Actors hand complete appends (events already numbered and hashed, plus the
rows that must commit with them: projections, idempotency records, a
snapshot) to `Journal.append`, which resolves once they are committed
(`persistence.journal_writer`). The rows, the hash chain and the errors are
in `persistence.events`; this module adds the reads, and is where the rest of
the server imports the journal's names from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    Refused,
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
    "Loaded",
    "Refused",
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

    async def load(self, actor_id: str) -> Loaded:
        """What an actor activates from, in one round trip and one snapshot
        of the database: its latest snapshot, the events after it, and the
        replies it gave (for retries)."""
        loaded = Loaded()
        for r in await self._fetch(_LOAD_SQL, actor_id):
            kind = r["kind"]
            if kind == "e":
                loaded.events.append(_row_event(actor_id, r))
            elif kind == "i":
                loaded.idempotency.append(
                    IdempotencyRecord(r["user_id"], r["request_id"], r["fingerprint"], r["data"])
                )
            else:
                loaded.snapshot = (r["seq"], r["data"])
        return loaded

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


@dataclass(slots=True)
class Loaded:
    """An actor's durable past (`Journal.load`)."""

    snapshot: tuple[int, dict[str, Any]] | None = None
    events: list[StoredEvent] = field(default_factory=list)  # after the snapshot, in order
    idempotency: list[IdempotencyRecord] = field(default_factory=list)


# The three reads of an activation as one statement (rows told apart by
# `kind`): the snapshot ('s'), the events after it ('e', in order), the
# replies ('i').
_LOAD_SQL = (
    "WITH s AS (SELECT seq, state FROM snapshots WHERE actor_id = $1)"
    " SELECT 's' AS kind, seq, NULL AS name, state AS data, NULL::timestamptz AS at,"
    " NULL AS prev_hash, NULL AS hash, NULL AS user_id, NULL AS request_id,"
    " NULL AS fingerprint FROM s"
    " UNION ALL SELECT 'e', seq, name, data, at, prev_hash, hash, NULL, NULL, NULL"
    " FROM journal WHERE actor_id = $1 AND seq > COALESCE((SELECT seq FROM s), 0)"
    " UNION ALL SELECT 'i', NULL, NULL, reply, NULL, NULL, NULL, user_id, request_id,"
    " fingerprint FROM idempotency WHERE actor_id = $1"
    " ORDER BY kind, seq"
)


def _row_event(actor_id: str, r: asyncpg.Record) -> StoredEvent:
    at: datetime = r["at"]
    return StoredEvent(actor_id, r["seq"], r["name"], r["data"], iso(at), r["prev_hash"], r["hash"])

"""Projections: read-side rows committed in the same transaction as the events
that produce them, batched across actors by the journal.

An actor returns `Projection` rows from `projections()`; the journal writes
every row of a batch for one table with a single `unnest` upsert inside the
batch's one statement. Within a batch the last row per key wins (an actor
appends one batch at a time, so rows of one key arrive in order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ProjectionTable:
    table: str
    columns: tuple[str, ...]  # the first one is the key
    types: tuple[str, ...]  # Postgres types, for the unnest arrays
    on_conflict: str  # what an existing row becomes

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise ValueError(f"{self.table}: {len(self.columns)} columns, {len(self.types)} types")


@dataclass(frozen=True, slots=True)
class Projection:
    table: ProjectionTable
    row: tuple[Any, ...]

    @property
    def key(self) -> Any:
        return self.row[0]


SESSIONS = ProjectionTable(
    table="sessions",
    columns=(
        "session_id",
        "state",
        "customer_id",
        "enp_id",
        "seq",
        "snapshot",
        "request",
        "created_at",
        "updated_at",
    ),
    types=(
        "text",
        "text",
        "text",
        "text",
        "bigint",
        "jsonb",
        "jsonb",
        "timestamptz",
        "timestamptz",
    ),
    on_conflict=(
        "(session_id) DO UPDATE SET state = EXCLUDED.state, enp_id = EXCLUDED.enp_id,"
        " seq = EXCLUDED.seq, snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at"
    ),
)

# Outbox rows (persistence/outbox.py): inserted once, never upserted.
OUTBOX = ProjectionTable(
    table="outbox",
    columns=("id", "stream", "session_id", "destination", "type", "payload", "recipient"),
    types=("text", "text", "text", "text", "text", "jsonb", "integer"),
    on_conflict="(id) DO NOTHING",
)

# Every table the journal batches; the order fixes the batch statement's text.
TABLES: tuple[ProjectionTable, ...] = (SESSIONS, OUTBOX)

"""Projections: read-side rows committed in the same transaction as the events
that produce them, batched across actors by the journal.

An actor returns `Projection` rows from `projections()`; the journal writes
every row of a batch for one table with a single upsert inside the
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
    types: tuple[str, ...]  # Postgres types, of the batch's rows (json_to_recordset)
    on_conflict: str = ""  # what an existing row becomes ("": a second row is refused)
    # Columns computed in SQL at insert: (column, expression over the new row
    # `u` and what `joined` joins to it).
    computed: tuple[tuple[str, str], ...] = ()
    joined: str = ""
    # A statement of its own instead of the upsert: `{rows}` stands for the
    # batch's rows of the table (`u`).
    statement: str = ""
    # Within a batch, the first row per key wins (the order the statements
    # ran in when each had its own), not the last.
    first_wins: bool = False

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

# Outbox rows (persistence/outbox.py): inserted once, never upserted. A row
# for a destination the journal was told has no sender (`held`, the batch's
# own table of destinations and reasons) is held from the start, as the
# delivery worker would hold it on its first poll. A row
# falls due no sooner than the last pending row of its stream (it cannot go
# before it): behind a head that waits out a retry, or that is held for want
# of a sender ('infinity', and then for the same reason), it waits as long,
# and the poll does not walk it.
# (The last row by `n`, through index outbox_stream, and "not delivered or
# dead" rather than "pending": the journal's statement keeps a generic plan,
# and one made while the table was empty must not be able to reach for an
# index of pending rows and walk them all.)
OUTBOX = ProjectionTable(
    table="outbox",
    columns=("id", "stream", "session_id", "destination", "type", "payload", "recipient"),
    types=("text", "text", "text", "text", "text", "jsonb", "integer"),
    on_conflict="(id) DO NOTHING",
    computed=(
        (
            "next_attempt_at",
            "CASE WHEN held.reason IS NOT NULL THEN 'infinity'::timestamptz"
            " ELSE GREATEST(now(), last.next_attempt_at) END",
        ),
        (
            "last_error",
            "COALESCE(held.reason,"
            " CASE WHEN last.next_attempt_at = 'infinity' THEN last.last_error END)",
        ),
    ),
    joined=(
        "LEFT JOIN LATERAL (SELECT p.next_attempt_at, p.last_error FROM outbox p"
        " WHERE p.stream = u.stream AND p.status NOT IN ('delivered', 'dead')"
        " ORDER BY p.n DESC LIMIT 1) last ON true"
        " LEFT JOIN held ON held.destination = u.destination"
    ),
)

# The offers a notary makes (persistence/offers.py): opened once (a second
# row of the same id is refused, as a stale activation's would be), then
# resolved once, by whichever commit comes first.
OFFERS_OPENED = ProjectionTable(
    table="offers",
    columns=("offer_id", "session_id", "notary_id", "expires_at"),
    types=("text", "text", "text", "timestamptz"),
    computed=(("state", "'open'"), ("created_at", "now()")),
)
OFFERS_RESOLVED = ProjectionTable(
    table="offers",
    columns=("offer_id", "state"),
    types=("text", "text"),
    statement=(
        "UPDATE offers o SET state = u.state, resolved_at = now() FROM {rows}"
        " WHERE o.offer_id = u.offer_id AND o.state = 'open'"
    ),
    first_wins=True,
)

# A notary's live response-time average (persistence/directory.py).
NOTARY_LIVE_AVG = ProjectionTable(
    table="notaries",
    columns=("notary_id", "live_avg_response_s"),
    types=("text", "double precision"),
    on_conflict=("(notary_id) DO UPDATE SET live_avg_response_s = EXCLUDED.live_avg_response_s"),
    computed=(("profile", "'{}'::jsonb"),),
)

# A notarized act's records (persistence/envelopes.py, persistence/book.py):
# inserted once; a second row of the same key is refused. (A table's first
# column is the key a batch keeps one row of: the session's, for an entry.)
ENVELOPES = ProjectionTable(
    table="envelopes",
    columns=("envelope_id", "session_id", "key_id", "sealed"),
    types=("text", "text", "text", "text"),
)
BOOK_ENTRIES = ProjectionTable(
    table="notarial_book",
    columns=("session_id", "notary_id", "complete", "act_at", "entry", "entry_no"),
    types=("text", "text", "boolean", "timestamptz", "jsonb", "bigint"),
)

# Where an outbox row names its destination.
OUTBOX_DESTINATION = OUTBOX.columns.index("destination")

# Every table the journal batches; the order fixes the batch statement's text.
TABLES: tuple[ProjectionTable, ...] = (
    SESSIONS,
    OUTBOX,
    OFFERS_OPENED,
    OFFERS_RESOLVED,
    NOTARY_LIVE_AVG,
    ENVELOPES,
    BOOK_ENTRIES,
)

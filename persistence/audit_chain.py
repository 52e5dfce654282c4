"""The audit log's hash chain: what a row's hash covers, and the one
transaction that extends the chain by a batch of rows.

Each row carries `chain_seq` (1, 2, 3, … over the whole table), `prev_hash`
(the hash of the row before, `GENESIS_HASH` for the first) and `hash` =
sha256(prev_hash || canonical JSON of the row's fields, its `chain_seq` and
`prev_hash`), the journal's scheme (`persistence.events.chain_hash`). The
`id` is not hashed (Postgres gives it during the COPY), but the chain's
order must be the ids' order, which verification checks.

What is hashed must be what Postgres gives back, byte for byte: `at` is
hashed at microsecond precision in UTC (what `timestamptz` keeps), and
`metadata` is first made what `jsonb` returns (an integral float that Python
writes with an exponent comes back as an integer, -0.0 as 0.0), so the
canonical JSON of the stored value is the one hashed.

Several processes write (cluster mode): each batch's transaction locks the
one-row `audit_chain_head` (`SELECT … FOR UPDATE`), hashes its rows after the
head, copies them in and moves the head, so the chains of all writers are one
chain, and ids (taken during the COPY, under the lock) follow it. A writer
that knows the head (it wrote last) does it all in one statement instead: it
moves the head on condition that it is still where it left it (taking the
same row lock) and inserts its rows only if it did; otherwise it takes the
locked way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from persistence.events import GENESIS_HASH, canonical_json, jsonb_value
from persistence.pool import compact_json

__all__ = [
    "COLUMNS",
    "GENESIS_HASH",
    "AuditReport",
    "ChainHead",
    "audit_hash",
    "hashed_at",
    "jsonb_value",
    "verify_audit",
    "write_chained",
]

# The row's fields, as the writer copies them and the hash covers them.
COLUMNS = (
    "at",
    "event_type",
    "user_id",
    "ip_address",
    "user_agent",
    "resource_type",
    "resource_id",
    "action",
    "outcome",
    "error_code",
    "correlation_id",
    "metadata",
)
CHAIN_COLUMNS = ("chain_seq", "prev_hash", "hash")


def hashed_at(at: datetime) -> str:
    """`at` as hashed: UTC, microseconds, what `timestamptz` keeps exactly."""
    utc = at if at.tzinfo is UTC else at.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y does not pad them; isoformat does
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"  # half strftime's cost


def audit_hash(prev_hash: str, chain_seq: int, row: Mapping[str, Any]) -> str:
    """The hash of one audit row (`row`: `COLUMNS`, `at` a datetime). Raises
    ValueError (UnicodeEncodeError) for text that is not valid Unicode."""
    return _hashed(prev_hash, chain_seq, {c: row[c] for c in COLUMNS}, row["at"])[1]


def _hashed(
    prev_hash: str, chain_seq: int, fields: dict[str, Any], at: datetime
) -> tuple[str, str]:
    """The canonical JSON a row's hash covers (`fields`: its `COLUMNS`,
    `at` made the text hashed, and `chain_seq` and `prev_hash` added), and
    the hash."""
    fields["at"] = hashed_at(at)
    fields["chain_seq"] = chain_seq
    fields["prev_hash"] = prev_hash
    text = canonical_json(fields)
    return text, hashlib.sha256((prev_hash + text).encode()).hexdigest()


@dataclass(slots=True)
class _Link:
    """One row hashed after the one before: its time (UTC), its fields as
    hashed (`metadata` as jsonb gives it back, `chain_seq`, `prev_hash`),
    the canonical JSON its hash covers, and the hash."""

    at: datetime
    fields: dict[str, Any]
    text: str
    digest: str

    @property
    def seq(self) -> int:
        seq: int = self.fields["chain_seq"]
        return seq

    def record(self) -> tuple[Any, ...]:
        """The row to copy: `COLUMNS` + `CHAIN_COLUMNS`."""
        f = {**self.fields, "at": self.at, "hash": self.digest}
        return tuple(f[c] for c in (*COLUMNS, *CHAIN_COLUMNS))

    def json_row(self) -> str:
        """The row as a JSON object of `COLUMNS` + `CHAIN_COLUMNS`: the text
        hashed (which holds every column but the hash, `at` exact to the
        microsecond in UTC, as `timestamptz` keeps it) with the hash added.
        Before the year 1000 the hashed time is not ISO 8601 (its year is
        not padded, as it always was hashed): that row says it as ISO."""
        if self.at.year < 1000:
            row = {**self.fields, "at": self.at.isoformat(), "hash": self.digest}
            return compact_json(row).decode()
        return f'{self.text[:-1]},"hash":"{self.digest}"}}'


def _chain(rows: Sequence[Mapping[str, Any]], head_seq: int, head_hash: str) -> list[_Link]:
    """The rows hashed after the head, in order (the last is the new head)."""
    links: list[_Link] = []
    seq, prev = head_seq, head_hash
    for row in rows:
        at = _utc(row["at"])
        fields = {c: row[c] for c in COLUMNS}
        fields["metadata"] = jsonb_value(fields["metadata"])
        seq += 1
        text, prev = _hashed(prev, seq, fields, at)
        links.append(_Link(at, fields, text, prev))
    return links


def _utc(at: datetime) -> datetime:
    """A naive time is taken as UTC (as asyncpg stores it)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@dataclass
class ChainHead:
    """A writer's idea of the chain's head: what it last wrote (or read)."""

    seq: int | None = None
    hash: str | None = None


_TYPES = ("timestamptz", *("text",) * 10, "jsonb", "bigint", "text", "text")

# One statement, one round trip: the head moves from where this writer left it
# and the rows go in, or (another writer moved it) nothing happens. The rows
# travel as one JSON text (as the journal's batch does): asyncpg encodes array
# parameters element by element, which cost more than hashing the rows.
_APPEND_AFTER = (
    "WITH h AS (UPDATE audit_chain_head SET seq = $1, hash = $2"
    " WHERE singleton AND seq = $3 AND hash = $4 RETURNING 1)"
    " INSERT INTO audit_log (" + ", ".join((*COLUMNS, *CHAIN_COLUMNS)) + ")"
    " SELECT * FROM json_to_recordset($5::json) AS r("
    + ", ".join(f"{c} {t}" for c, t in zip((*COLUMNS, *CHAIN_COLUMNS), _TYPES, strict=True))
    + ") WHERE EXISTS (SELECT FROM h)"
)


async def write_chained(
    conn: asyncpg.Connection, rows: Sequence[Mapping[str, Any]], head: ChainHead | None = None
) -> None:
    """Append `rows` to the chain in one transaction: all of them or none.
    A row that cannot be hashed or stored raises (ValueError, a DataError…)
    and leaves the chain as it was.

    With `head` (a writer's own, kept between calls): first in one statement
    after the head it knows, which is right unless another writer (another
    process of a cluster) moved it since; then as below, and `head` follows."""
    if not rows:
        return
    if head is not None and head.seq is not None and head.hash is not None:
        links = _chain(rows, head.seq, head.hash)
        seq, digest = links[-1].seq, links[-1].digest
        table = "[" + ",".join([link.json_row() for link in links]) + "]"
        done = await conn.execute(_APPEND_AFTER, seq, digest, head.seq, head.hash, table, timeout=5)
        if done.split()[-1] != "0":
            head.seq, head.hash = seq, digest
            return
    seq, digest = await _write_locked(conn, rows)
    if head is not None:
        head.seq, head.hash = seq, digest


async def _write_locked(
    conn: asyncpg.Connection, rows: Sequence[Mapping[str, Any]]
) -> tuple[int, str]:
    """The head locked and read, the rows hashed after it and copied in, the
    head moved: the new head."""
    async with conn.transaction():
        # A writer whose connection hangs while holding the head must not stall
        # the others for long: its backend gives the lock up once idle 10 s, and
        # a writer waits 5 s at most (then its rows wait, like in an outage).
        await conn.execute(
            "SET LOCAL lock_timeout = '5s'; SET LOCAL idle_in_transaction_session_timeout = '10s'"
        )
        head = await conn.fetchrow(
            "SELECT seq, hash FROM audit_chain_head WHERE singleton FOR UPDATE"
        )
        if head is None:
            raise RuntimeError("audit_chain_head has no row: run the migrations")
        links = _chain(rows, head["seq"], head["hash"])
        seq, digest = links[-1].seq, links[-1].digest
        await conn.copy_records_to_table(
            "audit_log",
            records=[link.record() for link in links],
            columns=(*COLUMNS, *CHAIN_COLUMNS),
        )
        await conn.execute(
            "UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE singleton", seq, digest
        )
    return seq, digest


# -- verification ------------------------------------------------------------------------


@dataclass
class AuditReport:
    valid: bool
    rows: int  # chained rows read
    unchained: int  # rows from before the chain (migration 0006)
    head_seq: int
    head_hash: str
    broken_id: int | None = None  # the first row that breaks the chain, when it exists
    reason: str | None = None

    def describe(self) -> str:
        if self.valid:
            before = f" (after {self.unchained} unchained)" if self.unchained else ""
            return (
                f"audit log verifies: {self.rows} chained rows{before},"
                f" head {self.head_seq} hash {self.head_hash}"
            )
        where = f"at id {self.broken_id}" if self.broken_id is not None else "at its end"
        return f"audit log BROKEN {where}: {self.reason}"


class _Walk:
    """The chain as read so far, row by row in id order."""

    def __init__(self) -> None:
        self.seq, self.prev = 0, GENESIS_HASH
        self.rows = self.unchained = 0
        self.last_id: int | None = None

    def step(self, row: Mapping[str, Any]) -> str | None:
        """What is wrong with the next row (None: it extends the chain)."""
        if row["chain_seq"] is None and row["prev_hash"] is None and row["hash"] is None:
            if self.seq:
                return "a row without a hash after the chain began"
            self.unchained += 1
            return None
        seq = row["chain_seq"]
        if seq is None or seq <= self.seq:
            return f"out of order: chain position {seq} comes after {self.seq}"
        if seq > self.seq + 1:
            return (
                f"chain positions {self.seq + 1}..{seq - 1} are missing before it"
                " (removed, or moved after it)"
            )
        if row["prev_hash"] != self.prev:
            return "prev_hash is not the hash of the row before"
        if audit_hash(self.prev, seq, row) != row["hash"]:
            return "content does not match its hash (a field, its time or the hash altered)"
        self.seq, self.prev, self.rows, self.last_id = seq, row["hash"], self.rows + 1, row["id"]
        return None

    def report(self, reason: str | None = None, broken_id: int | None = None) -> AuditReport:
        return AuditReport(
            reason is None, self.rows, self.unchained, self.seq, self.prev, broken_id, reason
        )

    def against(self, head_seq: int, head_hash: str) -> AuditReport:
        """The end of the chain against its head (rows cut from the end leave
        a shorter chain that is valid by itself)."""
        if head_seq > self.seq:
            return self.report(
                f"chain positions {self.seq + 1}..{head_seq} are missing at the end"
                f" (the chain head is at {head_seq})"
            )
        if head_seq < self.seq or head_hash != self.prev:
            return self.report(
                f"the last row (position {self.seq}) is not the chain head"
                f" (position {head_seq}, hash {head_hash})",
                self.last_id,
            )
        return self.report()


async def verify_audit(pool: asyncpg.Pool) -> AuditReport:
    """Recompute the audit log's chain, in id order, from one snapshot (a
    running server may write meanwhile), and name the first row that is
    altered, missing or out of order. `pool` must decode jsonb
    (`persistence.pool`)."""
    walk = _Walk()
    sql = (
        "SELECT id, chain_seq, prev_hash, hash, "
        + ", ".join(COLUMNS)
        + " FROM audit_log ORDER BY id"
    )
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow("SELECT seq, hash FROM audit_chain_head WHERE singleton")
        if head is None:
            return walk.report("the chain head is missing (migration 0006 not applied?)")
        async for row in conn.cursor(sql, prefetch=1000):
            wrong = walk.step(row)
            if wrong is not None:
                return walk.report(wrong, row["id"])
    return walk.against(head["seq"], head["hash"])

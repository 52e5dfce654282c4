"""Journal verification: recompute an actor's hash chain from the database
and name the first row that breaks it.

A row is broken when its `seq` is not the next one (a row deleted, or rows
reordered), its `prev_hash` is not the previous row's `hash`, its `hash` is
not the hash of its own content, or its timestamp carries more precision than
was hashed. Rows missing at the end are found against what else recorded the
head: the session projection's `seq` and the latest snapshot's `head_hash`.
The chain covers ciphertext, so no key is needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from core.clock import iso
from persistence.journal import GENESIS_HASH, chain_hash


@dataclass
class ChainReport:
    actor_id: str
    valid: bool
    rows: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.valid:
            return (
                f"{self.actor_id}: journal verifies, {self.rows} rows,"
                f" head seq {self.head_seq} hash {self.head_hash}"
            )
        return f"{self.actor_id}: BROKEN at seq {self.broken_seq}: {self.reason}"


def verify_rows(actor_id: str, rows: list[Any]) -> ChainReport:
    """`rows`: (seq, name, data, at, prev_hash, hash) in seq order."""
    prev_seq, prev_hash = 0, GENESIS_HASH

    def broken(seq: int, reason: str) -> ChainReport:
        return ChainReport(actor_id, False, len(rows), prev_seq, prev_hash, seq, reason)

    for r in rows:
        seq, name, data, at, row_prev, row_hash = (
            r["seq"],
            r["name"],
            r["data"],
            r["at"],
            r["prev_hash"],
            r["hash"],
        )
        if seq != prev_seq + 1:
            if seq > prev_seq + 1:
                return broken(prev_seq + 1, f"row {prev_seq + 1} is missing (next is {seq})")
            return broken(seq, f"row {seq} is out of order (after {prev_seq})")
        if row_prev != prev_hash:
            return broken(seq, "prev_hash is not the hash of the row before")
        if at.microsecond % 1000:
            return broken(seq, "timestamp altered (finer than the hashed milliseconds)")
        if chain_hash(row_prev, actor_id, seq, name, data, iso(at)) != row_hash:
            return broken(seq, "content does not match its hash (name, data, time or hash altered)")
        prev_seq, prev_hash = seq, row_hash
    return ChainReport(actor_id, True, len(rows), prev_seq, prev_hash)


async def verify_journal(conn: asyncpg.Connection | asyncpg.Pool, actor_id: str) -> ChainReport:
    """Verify `actor_id`'s journal as stored. `conn` must decode jsonb (the
    pool of `persistence.pool`)."""
    rows = await conn.fetch(
        "SELECT seq, name, data, at, prev_hash, hash FROM journal WHERE actor_id = $1 ORDER BY seq",
        actor_id,
    )
    report = verify_rows(actor_id, list(rows))
    if not report.valid:
        return report
    # Rows cut from the end leave a valid, shorter chain: compare with the heads
    # recorded elsewhere in the same transactions.
    heads: list[tuple[str, int, str | None]] = []
    if actor_id.startswith("session:"):
        seq = await conn.fetchval(
            "SELECT seq FROM sessions WHERE session_id = $1", actor_id.split(":", 1)[1]
        )
        if seq is not None:
            heads.append(("the session record", seq, None))
    snap = await conn.fetchrow("SELECT seq, state FROM snapshots WHERE actor_id = $1", actor_id)
    if snap is not None:
        heads.append(("the latest snapshot", snap["seq"], (snap["state"] or {}).get("head_hash")))
    by_seq = {r["seq"]: r["hash"] for r in rows}
    for what, seq, head_hash in heads:
        if seq > report.head_seq:
            report.valid, report.broken_seq = False, report.head_seq + 1
            report.reason = f"rows {report.head_seq + 1}..{seq} are missing ({what} is at {seq})"
            return report
        if head_hash is not None and by_seq.get(seq) != head_hash:
            report.valid, report.broken_seq = False, seq
            report.reason = f"row {seq} differs from the hash {what} recorded"
            return report
    return report

"""Journal verification: recompute an actor's hash chain, from the database
or offline from an export, and name the first row that breaks it.

A row is broken when its `seq` is not the next one (a row deleted, or rows
reordered), its `prev_hash` is not the previous row's `hash`, its `hash` is
not the hash of its own content, or its timestamp carries more precision than
was hashed. Rows missing at the end are found against what else recorded the
head: in the database, the session projection's `seq` and the latest
snapshot's `head_hash`; offline, the head `{seq, head_hash}` the signed TRUTH
envelope attests (`verify_export`). The chain covers ciphertext, so no key
is needed (but the envelope's public key, to trust the envelope itself).

The hashing is `persistence.events.chain_hash`, the one the server commits
with: what is verified is what was hashed, never a second implementation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

import asyncpg

from core.clock import iso
from core.ids import session_address
from persistence.journal import GENESIS_HASH, canonical_json, chain_hash
from persistence.keys import PublicKey, verify_signed

# An exported journal row's fields and their JSON types (PROTOCOL §8).
ROW_FIELDS: dict[str, type] = {
    "seq": int,
    "name": str,
    "data": dict,
    "at": str,
    "prev_hash": str,
    "hash": str,
}


@dataclass
class ChainReport:
    actor_id: str
    valid: bool
    rows: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None
    anchor_seq: int | None = None  # the row an envelope attests, when checked against one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.valid:
            anchored = (
                "" if self.anchor_seq is None else f"; the envelope's seq {self.anchor_seq} matches"
            )
            return (
                f"{self.actor_id}: journal verifies, {self.rows} rows,"
                f" head seq {self.head_seq} hash {self.head_hash}{anchored}"
            )
        where = f"at seq {self.broken_seq}" if self.broken_seq is not None else "(the envelope)"
        return f"{self.actor_id}: BROKEN {where}: {self.reason}"


def verify_rows(actor_id: str, rows: list[Any]) -> ChainReport:
    """`rows`: (seq, name, data, at, prev_hash, hash) in seq order; `at` a
    datetime (from the database) or the text that was hashed (an export)."""
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
        if not isinstance(at, str) and at.microsecond % 1000:
            return broken(seq, "timestamp altered (finer than the hashed milliseconds)")
        at_text = at if isinstance(at, str) else iso(at)
        if chain_hash(row_prev, actor_id, seq, name, data, at_text) != row_hash:
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


# -- offline: an exported journal against a signed envelope ------------------------------


class ExportError(ValueError):
    """What was handed over is not a journal export or not a signed envelope
    at all (as opposed to one that does not verify)."""


@dataclass(frozen=True)
class Anchor:
    """What a signed envelope attests of its session's journal."""

    session_id: str
    actor_id: str
    seq: int
    head_hash: str


def envelope_anchor(signed: Any) -> Anchor:
    """The journal head a signed envelope (`GET /v1/envelopes/{id}`) attests;
    ExportError when it has none."""
    envelope = signed.get("envelope") if isinstance(signed, dict) else None
    head = envelope.get("journal") if isinstance(envelope, dict) else None
    if not isinstance(envelope, dict) or not isinstance(head, dict):
        raise ExportError("not a signed envelope: needs envelope.journal")
    sid, actor_id = envelope.get("session_id"), head.get("actor_id")
    seq, head_hash = head.get("seq"), head.get("head_hash")
    if not (isinstance(sid, str) and isinstance(actor_id, str) and isinstance(head_hash, str)):
        raise ExportError("not a signed envelope: needs session_id and journal.actor_id, head_hash")
    if not _is_int(seq):
        raise ExportError("not a signed envelope: journal.seq must be an integer")
    return Anchor(sid, actor_id, seq, head_hash)


def export_rows(journal: Any) -> tuple[str, list[Any]]:
    """(session id, rows) of a journal export (`GET /v1/sessions/{id}/journal`);
    ExportError when it is not one. The rows themselves are not checked here."""
    if not isinstance(journal, dict):
        raise ExportError("not a journal export: needs an object with session_id and events")
    sid, events = journal.get("session_id"), journal.get("events")
    if not isinstance(sid, str) or not isinstance(events, list):
        raise ExportError("not a journal export: needs session_id (text) and events (a list)")
    return sid, events


def malformed_row(rows: list[Any]) -> tuple[int, str] | None:
    """(seq, what is wrong) of the first row without the fields of an
    exported row (named by its seq, or by the place it is at)."""
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            return i, f"row {i} is not an object"
        raw = row.get("seq")
        seq = raw if _is_int(raw) else i
        for name, kind in ROW_FIELDS.items():
            value = row.get(name)
            if not isinstance(value, kind) or (kind is int and not _is_int(value)):
                return seq, f"field {name!r} is missing or not a {kind.__name__}"
        try:  # what the server hashed was valid Unicode (a lone surrogate cannot be)
            canonical_json(row).encode()
        except UnicodeEncodeError:
            return seq, "it holds text that is not valid Unicode"
    return None


def verify_export(journal: Any, signed: Any, keys: list[PublicKey] | None = None) -> ChainReport:
    """Verify an exported journal offline: its chain, and its row at the seq
    the envelope attests against the envelope's `head_hash` (a journal cut
    short, or rewritten with fresh hashes, fails there). With `keys`, the
    envelope's signature is checked first. ExportError when either object is
    not what it should be at all."""
    sid, rows = export_rows(journal)
    anchor = envelope_anchor(signed)
    actor_id = session_address(sid)

    def refused(reason: str, seq: int | None = None) -> ChainReport:
        return ChainReport(actor_id, False, len(rows), 0, GENESIS_HASH, seq, reason)

    if keys is not None:
        valid, why = verify_signed(signed, keys)
        if not valid:
            return refused(f"the envelope's signature does not verify: {why}")
    if (anchor.session_id, anchor.actor_id) != (sid, actor_id):
        return refused(f"the envelope is of session {anchor.session_id}, the journal of {sid}")
    bad = malformed_row(rows)
    if bad is not None:
        return refused(bad[1], bad[0])
    report = verify_rows(actor_id, rows)
    if not report.valid:
        return report
    if anchor.seq < 1:
        return refused(f"the envelope attests seq {anchor.seq}, which no journal has")
    if anchor.seq > report.head_seq:
        return refused(
            f"rows {report.head_seq + 1}..{anchor.seq} are missing"
            f" (the envelope attests seq {anchor.seq})",
            report.head_seq + 1,
        )
    if rows[anchor.seq - 1]["hash"] != anchor.head_hash:
        return refused("its hash is not the head hash the envelope attests", anchor.seq)
    report.anchor_seq = anchor.seq
    return report


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)

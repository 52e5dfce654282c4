"""The Electronic Notarial Book (A.M. No. 24-10-14-SC): one entry per act,
incomplete acts included, numbered per notary, append-only.

Entries are written by the session actor in the same transaction as the
state change that makes them (`NOTARIZED`, or `CANCELLED`/`FAILED` after a
notary was assigned). Personal data in an entry (principals' names and
addresses, identity documents) is sealed with the PII key; the export opens it
for the notary whose book it is, or an admin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from core.clock import iso, parse_iso
from core.text import csv_line
from persistence.keys import PiiCipher
from persistence.projections import BOOK_ENTRIES, Projection

# Entry numbers come from a per-notary counter row, locked by its upsert, so
# concurrent entries of one notary are numbered one after the other. Every
# number taken goes to one session in `notarial_book_reservations`; a session
# that holds a reservation keeps it (the counter is not touched again).
_RESERVED = (
    "WITH prior AS (SELECT entry_no FROM notarial_book_reservations WHERE session_id = $2),"
    " c AS (INSERT INTO notarial_book_counters (notary_id, last_entry_no)"
    " SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM prior)"
    " ON CONFLICT (notary_id) DO UPDATE"
    " SET last_entry_no = notarial_book_counters.last_entry_no + 1 RETURNING last_entry_no),"
    " r AS (INSERT INTO notarial_book_reservations (session_id, notary_id, entry_no)"
    " SELECT $2, $1, last_entry_no FROM c RETURNING entry_no),"
    " n AS (SELECT entry_no FROM r UNION ALL SELECT entry_no FROM prior)"
)
# The session's number ($1 notary, $2 session): reserved now, or the one it has.
RESERVE_SQL = _RESERVED + " SELECT entry_no FROM n"
# An entry under the session's number, reserved in the same statement when it
# has none (an incomplete act, written within another commit's statements).
BOOK_ENTRY_SQL = (
    _RESERVED + " INSERT INTO notarial_book (notary_id, entry_no, session_id, complete, act_at,"
    " entry) SELECT $1, n.entry_no, $2, $3, $4, $5 FROM n"
)


async def reserve_entry_no(pool: asyncpg.Pool, notary_id: str, session_id: str) -> int:
    """The number of `session_id`'s entry in `notary_id`'s book, reserved in
    a statement of its own (before the envelope that carries it is signed):
    the next one of the notary's counter, or the one the session already has.
    Raises on an outage (the caller's timer runs again)."""
    try:
        entry_no = await pool.fetchval(RESERVE_SQL, notary_id, session_id)
    except asyncpg.UniqueViolationError:
        # Another activation of the session reserved at the same moment (its
        # counter step was undone with the refused row): its number stands.
        entry_no = await pool.fetchval(RESERVE_SQL, notary_id, session_id)
    return int(entry_no)


MODE = "REN"  # remote electronic notarization

# The ten fields of the rules, in the export's order, then what this server adds.
TEN_FIELDS = (
    "act",
    "date_time",
    "document_title",
    "principals",
    "witnesses",
    "competent_evidence_of_identity",
    "fee",
    "parties_in_philippines",
    "mode",
    "other_circumstances",
)
EXTRA_FIELDS = (
    "entry_no",
    "complete",
    "session_id",
    "document_sha256",
    "recording_url",
    "recording_sha256",
    "incomplete_reason",
    "signature_sha256",
    "signed_at",
    "sealed_at",
)


def party_countries(state: dict[str, Any]) -> dict[str, str | None]:
    """Each party's declared country (the latest `session.join` location)."""
    return {
        p["role"]: ((p.get("location") or {}).get("country") or None)
        for p in state["participants"].values()
    }


def book_entry(
    state: dict[str, Any], session_id: str, *, at: str, reason: str
) -> tuple[str, tuple[Any, ...]]:
    """The statement that writes an incomplete act's entry, with its
    arguments, under the session's reservation, made by the statement if
    need be."""
    return BOOK_ENTRY_SQL, _entry_args(state, session_id, at, False, reason)


def numbered_book_entry(
    state: dict[str, Any], session_id: str, *, at: str, entry_no: int
) -> Projection:
    """The row that writes a complete act's entry under `entry_no`, reserved
    beforehand (`reserve_entry_no`; the foreign key to the reservations
    refuses any other), batched with the commit's other rows."""
    notary_id, _, complete, act_at, entry = _entry_args(state, session_id, at, True, None)
    # The session first: a batch keeps one row per key, and a notary's entries are many.
    return Projection(BOOK_ENTRIES, (session_id, notary_id, complete, act_at, entry, entry_no))


def _entry_args(
    state: dict[str, Any], session_id: str, at: str, complete: bool, reason: str | None
) -> tuple[Any, ...]:
    """(notary_id, session_id, complete, act_at, entry) of this session's
    entry (the principal in it is already sealed, in the session's request)."""
    request = state.get("request") or {}
    document = state.get("document") or {}
    principal_sealed = request.get("principal")
    checks = state.get("checks") or {}
    recording = state.get("recording") or {}
    countries = party_countries(state)
    in_ph = bool(countries) and all((c or "").upper() == "PH" for c in countries.values())
    comprehension = "confirmed" if checks.get("comprehension_confirmed") else "not confirmed"
    duress = "passed" if checks.get("duress_check_passed") else "not passed"
    circumstances = [
        "Remote electronic notarization by live audio-video; "
        f"comprehension {comprehension}, duress check {duress}.",
        "Declared locations: "
        + ", ".join(f"{role} {c or 'not declared'}" for role, c in sorted(countries.items()))
        + ".",
    ]
    if not complete:
        circumstances.append(f"Incomplete act: {reason}.")
    entry: dict[str, Any] = {
        "act": document.get("type"),
        "date_time": at,
        "document_title": document.get("title"),
        # Sealed as given at session.request: {name, address, id_type, id_number}.
        "principal": principal_sealed,
        "customer_id": state.get("customer_id"),
        "witnesses": [],
        "kyc": {
            "identity_verified": True,  # session.request requires a KYC-verified token
            "kyc_session_id": request.get("kyc_session_id"),
            "face_match_score": request.get("face_match_score"),
        },
        "fee": {"amount": state.get("amount"), "currency": "PHP"},
        "parties_in_philippines": in_ph,
        "party_countries": countries,
        "mode": MODE,
        "other_circumstances": " ".join(circumstances),
        "document_sha256": document.get("sha256"),
        "recording_url": recording.get("url"),
        "recording_sha256": recording.get("sha256"),
        "incomplete_reason": None if complete else reason,
        "enp": {"name": state.get("enp_name"), "license_number": state.get("enp_license")},
        "principal_signature": signature_reference(state),
        "sealed_at": (state.get("sealed") or {}).get("at"),
    }
    return (state["enp_id"], session_id, complete, parse_iso(at), entry)


def signature_reference(state: dict[str, Any]) -> dict[str, Any] | None:
    """The principal's signature as the book refers to it: the SHA-256 (hex)
    of the `act.sign` signature (the string as given, UTF-8) and when it was
    given (the `act.signed` event's time); None before the act was signed."""
    signed = state.get("signed")
    if not signed:
        return None
    digest = hashlib.sha256(str(signed["signature"]).encode("utf-8", "surrogatepass"))
    return {"sha256": digest.hexdigest(), "signed_at": signed.get("at")}


def export_entry(row: Any, pii: PiiCipher) -> dict[str, Any]:
    """One book row as exported: the ten fields (personal data opened), then
    the server's additions."""
    e = row["entry"]
    session_id = row["session_id"]
    principal = pii.open_or_none(e.get("principal"), session_id) or {}
    name = principal.get("name") or e.get("customer_id")
    principals = [{"name": name, "address": principal.get("address")}]
    evidence = {
        "id_type": principal.get("id_type"),
        "id_number": principal.get("id_number"),
        **(e.get("kyc") or {}),
    }
    act_at: datetime = row["act_at"]
    signature = e.get("principal_signature") or {}  # entries before issue 14 have none
    return {
        "entry_no": row["entry_no"],
        "act": e.get("act"),
        "date_time": iso(act_at),
        "document_title": e.get("document_title"),
        "principals": principals,
        "witnesses": e.get("witnesses") or [],
        "competent_evidence_of_identity": evidence,
        "fee": e.get("fee"),
        "parties_in_philippines": e.get("parties_in_philippines"),
        "mode": e.get("mode"),
        "other_circumstances": e.get("other_circumstances"),
        "complete": row["complete"],
        "session_id": session_id,
        "document_sha256": e.get("document_sha256"),
        "recording_url": e.get("recording_url"),
        "recording_sha256": e.get("recording_sha256"),
        "incomplete_reason": e.get("incomplete_reason"),
        "signature_sha256": signature.get("sha256"),
        "signed_at": signature.get("signed_at"),
        "sealed_at": e.get("sealed_at"),
    }


def _cell(field: str, value: Any) -> str:
    if value is None:
        return ""
    if field == "principals":
        return "; ".join(
            p["name"] + (f" ({p['address']})" if p.get("address") else "") for p in value
        )
    if field == "witnesses":
        return "; ".join(str(w) for w in value) or "none"
    if field == "competent_evidence_of_identity":
        parts = [f"{value.get('id_type') or 'ID'} {value.get('id_number') or ''}".strip()]
        if value.get("kyc_session_id"):
            parts.append(f"KYC {value['kyc_session_id']}")
        if value.get("face_match_score") is not None:
            parts.append(f"face match {value['face_match_score']}")
        return "; ".join(parts)
    if field == "fee":
        return f"{value.get('amount')} {value.get('currency')}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def no_entries_statement(notary_id: str, month: str) -> str:
    return f"No entries in the notarial book of {notary_id} for {month}."


def to_csv(entries: Iterable[dict[str, Any]], notary_id: str, month: str) -> str:
    """The month's entries as CSV; every cell through `csv_line` (a value that
    starts like a formula is neutralised)."""
    columns = ("entry_no", *TEN_FIELDS, *EXTRA_FIELDS[1:])
    lines = [csv_line(columns)]
    for e in entries:
        lines.append(csv_line(_cell(c, e.get(c)) for c in columns))
    if len(lines) == 1:
        lines.append(
            csv_line(["", no_entries_statement(notary_id, month)] + [""] * (len(columns) - 2))
        )
    return "".join(lines)

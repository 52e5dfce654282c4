"""Issue 14, the pure parts: an exported journal verified against a signed
envelope (`persistence.verify.verify_export`), and the audit chain's hash
(`persistence.audit_chain`), without a database."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from core.ids import session_address
from persistence.audit_chain import COLUMNS, GENESIS_HASH, audit_hash, hashed_at, jsonb_value
from persistence.events import StoredEvent
from persistence.keys import Signer
from persistence.verify import ExportError, verify_export

SID = "2f9b8c1e-0000-4000-8000-000000000001"


def journal(rows: int = 6) -> dict[str, Any]:
    """An export of `rows` events, hashed as the server hashes them."""
    prev, events = GENESIS_HASH, []
    for seq in range(1, rows + 1):
        at = f"2026-03-01T08:00:0{seq}.123Z"
        e = StoredEvent.make(session_address(SID), seq, "e", {"n": seq, "s": "é"}, at, prev)
        events.append(e.with_hashes())
        prev = e.hash
    return {"session_id": SID, "events": events}


def envelope(export: dict[str, Any], seq: int, signer: Signer | None = None) -> dict[str, Any]:
    body = {
        "uid": f"ENF-{SID}",
        "session_id": SID,
        "journal": {
            "actor_id": session_address(SID),
            "seq": seq,
            "head_hash": export["events"][seq - 1]["hash"],
        },
    }
    if signer is not None:
        return signer.sign(body)
    return {"envelope": body, "signature": "", "key_id": "k"}


def test_a_valid_export_and_each_kind_of_break() -> None:
    export = journal()
    signed = envelope(export, 4)
    report = verify_export(export, signed)
    assert report.valid and report.rows == 6 and report.anchor_seq == 4, report
    cases: list[tuple[int, str, Any, int, str]] = [
        (2, "data", {"n": 2, "s": "e"}, 2, "does not match its hash"),
        (5, "at", "2026-03-01T08:00:05.124Z", 5, "does not match its hash"),
        (3, "seq", 4, 3, "row 3 is missing"),
        (3, "seq", 2, 2, "out of order"),
        (3, "seq", True, 3, "'seq' is missing"),
        (6, "data", "text", 6, "'data' is missing or not a dict"),
        (2, "name", "\ud800", 2, "not valid Unicode"),
    ]
    for index, field, value, seq, says in cases:
        altered = copy.deepcopy(export)
        altered["events"][index - 1][field] = value
        report = verify_export(altered, signed)
        assert not report.valid and report.broken_seq == seq, (field, report)
        assert says in (report.reason or ""), (field, report)
        assert f"BROKEN at seq {seq}:" in report.describe()


def test_the_envelope_anchors_the_end() -> None:
    export = journal()
    signed = envelope(export, 4)
    cut = {**export, "events": export["events"][:3]}
    report = verify_export(cut, signed)
    assert not report.valid and report.broken_seq == 4 and "missing" in (report.reason or "")
    other = {**export, "session_id": "another"}
    report = verify_export(other, signed)
    assert not report.valid and report.broken_seq is None
    assert "BROKEN (the envelope): the envelope is of session" in report.describe()
    zero = copy.deepcopy(signed)
    zero["envelope"]["journal"]["seq"] = 0
    assert not verify_export(export, zero).valid


def test_the_signature_is_checked_with_keys(tmp_path: Path) -> None:
    signer = Signer.load(None, tmp_path)
    export = journal()
    signed = envelope(export, 5, signer)
    assert verify_export(export, signed, [signer.public]).valid
    signed["envelope"]["journal"]["seq"] = 4
    signed["envelope"]["journal"]["head_hash"] = export["events"][3]["hash"]
    assert verify_export(export, signed).valid  # the chain alone cannot tell
    report = verify_export(export, signed, [signer.public])
    assert not report.valid and "signature does not verify" in (report.reason or "")


@pytest.mark.parametrize(
    ("export", "signed", "says"),
    [
        ([], None, "not a journal export"),
        ({"session_id": SID, "events": {}}, None, "not a journal export"),
        (journal(), {"envelope": {}}, "not a signed envelope"),
        (journal(), {"envelope": {"session_id": SID, "journal": {}}}, "not a signed envelope"),
    ],
)
def test_what_is_not_an_export_at_all(export: Any, signed: Any, says: str) -> None:
    signed = signed if signed is not None else envelope(journal(), 1)
    with pytest.raises(ExportError, match=says):
        verify_export(export, signed)


# -- the audit chain's hash ----------------------------------------------------------------


def test_what_jsonb_gives_back() -> None:
    assert jsonb_value({"a": [1e16, -0.0, 0.5, 1e-7, 3, "x", None]}) == {
        "a": [10**16, 0.0, 0.5, 1e-7, 3, "x", None]
    }
    assert str(jsonb_value(-0.0)) == "0.0" and isinstance(jsonb_value(2e20), int)
    with pytest.raises(ValueError):
        jsonb_value([float("inf")])


def test_times_are_hashed_in_utc_to_the_microsecond() -> None:
    manila = timezone(timedelta(hours=8))
    at = datetime(2026, 3, 1, 8, 0, 0, 7, tzinfo=manila)
    assert hashed_at(at) == "2026-03-01T00:00:00.000007Z"
    assert hashed_at(at) == hashed_at(at.astimezone(UTC))


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 3, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
        datetime(999, 1, 1, tzinfo=UTC),  # strftime does not pad the year: kept so
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ],
)
def test_times_are_hashed_as_the_stored_chains_hashed_them(at: datetime) -> None:
    """Rows already chained were hashed with strftime; the faster isoformat
    must give the same text."""
    assert hashed_at(at) == at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_every_field_is_covered() -> None:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(at=datetime(2026, 3, 1, tzinfo=UTC), action="a", metadata={"k": 1})
    base = audit_hash(GENESIS_HASH, 1, row)
    assert audit_hash("1" * 64, 1, row) != base and audit_hash(GENESIS_HASH, 2, row) != base
    for column in COLUMNS:
        changed = {**row, column: {"k": 2} if column == "metadata" else "x"}
        if column == "at":
            changed["at"] = row["at"] + timedelta(microseconds=1)
        assert audit_hash(GENESIS_HASH, 1, changed) != base, column

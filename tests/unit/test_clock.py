"""The one time format of the wire and the record (core.clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from core.clock import iso, now_iso, parse_iso


def test_utc_with_milliseconds_truncated() -> None:
    manila = timezone(timedelta(hours=8))
    assert iso(datetime(2026, 12, 3, 17, 54, 38, 720999, tzinfo=manila)) == (
        "2026-12-03T09:54:38.720Z"
    )
    assert iso(datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    assert iso(datetime(2026, 12, 31, 23, 59, 59, 999, tzinfo=UTC)) == "2026-12-31T23:59:59.000Z"


def test_round_trip() -> None:
    now = now_iso()
    assert len(now) == 24 and now.endswith("Z")
    assert iso(parse_iso(now)) == now

"""Time on the wire and in the record: UTC, ISO 8601, millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """UTC time with millisecond precision, the one format used on the wire."""
    return iso(datetime.now(UTC))


def iso(dt: datetime) -> str:
    # isoformat, not strftime: half the cost, on every event and audit row.
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

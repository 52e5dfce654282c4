"""Text from outside, made storable: Postgres refuses NUL in text and jsonb,
and UTF-8 cannot carry an unpaired surrogate. Whatever a client sends that
reaches a row (audit fields, journal data) goes through `storable` first."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def storable(value: str) -> str:
    """`value` without NUL (dropped) and with unpaired surrogates replaced."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join(REPLACEMENT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)
    return value


def storable_json(value: Any) -> Any:
    """`storable` applied to every string of a JSON-shaped value (keys too)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value

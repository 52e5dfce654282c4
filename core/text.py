"""Text from outside, made storable and exportable.

Postgres refuses NUL in text and jsonb, and UTF-8 cannot carry an unpaired
surrogate: whatever a client sends that reaches a row (audit fields, journal
data) goes through `storable` first. Whatever leaves in a CSV export goes
through `csv_line`, which neutralises cells a spreadsheet would run as a
formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
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


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a JSON-shaped value with `fn` applied to every string value
    (keys are left as they are)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(v, fn) for v in value]
    return value


# -- CSV exports ------------------------------------------------------------------------

# What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One cell of a CSV export as text. Text starting like a formula gets a
    single quote in front, so a spreadsheet shows it instead of running it
    (`=HYPERLINK(…)` -> `'=HYPERLINK(…)`); numbers stay numbers; None is empty."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_line(cells: Iterable[Any]) -> str:
    """One CSV record (RFC 4180 quoting, CRLF), every cell through `csv_cell`:
    the one way CSV is written."""
    out = io.StringIO()
    csv.writer(out).writerow([csv_cell(c) for c in cells])
    return out.getvalue()

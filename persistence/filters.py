"""Optional filters of a listing, as one SQL WHERE clause and its arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def where(conditions: Sequence[tuple[str, str, Any]]) -> tuple[str, list[Any]]:
    """`(column, operator, value)` triples, those whose value is not None
    ANDed together: (" WHERE a >= $1 AND b = $2", [v1, v2]), or ("", [])."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, op, value in conditions:
        if value is not None:
            args.append(value)
            clauses.append(f"{column} {op} ${len(args)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

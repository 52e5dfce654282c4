"""The one CSV rule (`core.text.csv_line`): a text cell that a spreadsheet
would read as a formula gets a single quote in front; everything else is
written as it is, with CSV's own quoting."""

from __future__ import annotations

import csv
import io

import pytest

from core.text import csv_cell, csv_line


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_starting_like_a_formula_is_neutralised(start: str) -> None:
    value = start + 'HYPERLINK("http://evil.example","x")'
    assert csv_cell(value) == "'" + value
    [row] = list(csv.reader(io.StringIO(csv_line(["a", value, 1]))))
    assert row == ["a", "'" + value, "1"]


def test_other_cells_are_kept_as_they_are() -> None:
    line = csv_line(["plain", "a=b", " =x", "x,y", 'say "hi"', None, -5, 2.5, True, "'=q"])
    [row] = list(csv.reader(io.StringIO(line)))
    assert row == ["plain", "a=b", " =x", "x,y", 'say "hi"', "", "-5", "2.5", "True", "'=q"]
    assert line.endswith("\r\n")

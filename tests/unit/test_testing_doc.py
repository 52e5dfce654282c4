"""docs/testing.md against the contract (issue 17): every request type, event
type, error code, close code, HTTP route and HTTP status that PROTOCOL.md
names has a row in the doc's table of its kind, every row names at least one
test, and every test it names exists (found by parsing the test files with
`ast`, parameters left out)."""

from __future__ import annotations

import ast
import os
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
# The contract, as a clone has it (docs/PROTOCOL.md), and the team's copy
# beside the repository when there is one (they must be the same text).
PROTOCOL = Path(os.environ.get("ENF_PROTOCOL_MD", ROOT / "docs" / "PROTOCOL.md"))
SHARED = ROOT.parent / "shared" / "PROTOCOL.md"

NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")
TICKED = re.compile(r"`([^`]+)`")

# The doc's table headings (### ...), by the kind of item each one lists.
SECTIONS = {
    "requests": "Requests",
    "events": "Events",
    "errors": "Error codes",
    "close codes": "Close codes",
    "routes": "HTTP routes",
    "statuses": "HTTP statuses",
}


def _protocol() -> str:
    return PROTOCOL.read_text()


def test_the_repositorys_contract_is_the_teams() -> None:
    """docs/PROTOCOL.md is a copy of ../shared/PROTOCOL.md: where both are
    there, they are the same (copy it again when the contract changes)."""
    ours = (ROOT / "docs" / "PROTOCOL.md").read_text()
    assert "# ENF session server — wire contract" in ours
    if SHARED.exists():
        assert ours == SHARED.read_text(), "docs/PROTOCOL.md differs from ../shared/PROTOCOL.md"


def _section(text: str, heading: str) -> str:
    """The body of the `## n. heading` section."""
    match = re.search(rf"^## \d+\. {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r} in PROTOCOL.md"
    return match.group(1)


def _paragraph(text: str, start: str) -> str:
    """From `start` to the next blank line."""
    i = text.index(start)
    end = text.find("\n\n", i)
    return text[i : end if end >= 0 else len(text)]


def _first_cells(table_text: str) -> list[str]:
    return [
        re.split(r"(?<!\\)\|", line)[1]
        for line in table_text.splitlines()
        if line.startswith("| `") and not line.startswith("|---")
    ]


def _norm(item: str) -> str:
    return item.replace("\\|", "|").strip()


def contract() -> dict[str, set[str]]:
    """What PROTOCOL.md names, by kind."""
    text = _protocol()
    requests = {
        _norm(t) for cell in _first_cells(_section(text, "Requests")) for t in TICKED.findall(cell)
    }
    websocket = _section(text, "WebSocket")
    ephemeral = _paragraph(websocket, "Four kinds of event are ephemeral")
    ephemeral = ephemeral[: ephemeral.index("have no")]
    lifecycle = _paragraph(_section(text, "Lifecycle"), "Events on `session:<id>`")
    lifecycle = lifecycle.split("A dropped participant")[0]
    events = {
        t.split()[0]
        for t in TICKED.findall(ephemeral) + TICKED.findall(lifecycle)
        if NAME.match(t.split()[0])
    }
    errors = {t for t in TICKED.findall(_paragraph(websocket, "Error codes:")) if NAME.match(t)}
    details = _section(text, "Details")
    close = details[details.index("**Close codes.**") :]
    close = close[: close.index("\n- **")]
    close_codes = set(re.findall(r"\b[14]\d{3}\b", close))
    http = _section(text, "HTTP")
    routes = {_norm(t) for cell in _first_cells(http) for t in TICKED.findall(cell)}
    statuses_text = http[http.index("with the matching status") :]
    statuses = set(re.findall(r"\b[1-5]\d\d\b", statuses_text[: statuses_text.index(")")]))
    return {
        "requests": requests,
        "events": events,
        "errors": errors,
        "close codes": close_codes,
        "routes": routes,
        "statuses": statuses,
    }


def doc_tables() -> dict[str, dict[str, list[str]]]:
    """The doc's tables: heading -> item -> the tests its row names."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            current = tables.setdefault(line[4:].split(" (")[0].strip(), {})
        elif current is not None and line.startswith("| `"):
            cells = re.split(r"(?<!\\)\|", line)
            item = _norm(TICKED.findall(cells[1])[0])
            refs = [r.replace("*(xfail)*", "").strip() for r in cells[2].split(",")]
            current[item] = [r for r in refs if r]
    return tables


@cache
def defined_tests(path: str) -> frozenset[str]:
    """The names of the test functions defined at the top of a test file."""
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def test_the_contract_parses_into_what_we_expect() -> None:
    """The parser finds the contract's lists (a parser that finds nothing
    would let every doc pass)."""
    c = contract()
    assert {"session.request", "offer.accept", "offer.decline", "ping"} <= c["requests"]
    assert {"session.state", "offer", "notification", "video.config"} <= c["events"]
    assert {"bad_request", "internal"} <= c["errors"] and len(c["errors"]) == 9
    assert {"1001", "1009", "1013", "4429"} <= c["close codes"]
    assert "GET /v1/audit?from=&to=&format=json|csv" in c["routes"] and len(c["routes"]) == 17
    assert len(c["requests"]) == 20 and len(c["events"]) == 20 and len(c["close codes"]) == 7
    assert {"413", "429", "503"} <= c["statuses"]


@pytest.mark.parametrize("kind", list(SECTIONS))
def test_every_contract_item_has_a_row(kind: str) -> None:
    tables = doc_tables()
    heading = SECTIONS[kind]
    assert heading in tables, f"docs/testing.md has no '### {heading}' table"
    missing = sorted(contract()[kind] - set(tables[heading]))
    assert not missing, f"no row in docs/testing.md '{heading}' for: {missing}"
    empty = sorted(item for item, refs in tables[heading].items() if not refs)
    assert not empty, f"rows naming no test in '{heading}': {empty}"


def test_every_test_the_doc_names_exists() -> None:
    wrong: list[str] = []
    count = 0
    for heading, rows in doc_tables().items():
        for item, refs in rows.items():
            for ref in refs:
                count += 1
                path, _, name = ref.partition("::")
                name = name.split("[")[0]
                if not name or not (ROOT / path).is_file():
                    wrong.append(f"{heading} / {item}: {ref} (no such file)")
                elif name not in defined_tests(path):
                    wrong.append(f"{heading} / {item}: {ref} (no such test)")
    assert count > 100, count
    assert not wrong, "docs/testing.md names tests that do not exist:\n" + "\n".join(wrong)

"""The layering's one rule a linter cannot see: SQL lives in `persistence/`
alone. Every `.py` file of the server packages (and run.py) is read for SQL
text; a hit anywhere else fails, naming its file and line."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ("actors", "cluster", "config", "core", "delivery", "gateway", "media", "run.py")

# Case-sensitive, as our SQL is written: keywords in capitals, pg_ functions called.
SQL = re.compile(
    r"\bSELECT\s"
    r"|\bINSERT INTO\b"
    r"|\bUPDATE [a-z_]+ SET\b"
    r"|\bDELETE FROM\b"
    r"|\b(CREATE|ALTER|DROP) (TABLE|INDEX|TRIGGER|FUNCTION)\b"
    r"|\bTRUNCATE\b"
    r"|\bpg_[a-z_]+\("
)


def python_files(root: Path, names: Iterable[str]) -> Iterator[Path]:
    for name in names:
        path = root / name
        if path.is_file():
            yield path
        else:
            yield from sorted(path.rglob("*.py"))


def sql_hits(root: Path, names: Iterable[str]) -> list[str]:
    """`file:line: text` for every line with SQL text, outside persistence/."""
    hits: list[str] = []
    for path in python_files(root, names):
        rel = path.relative_to(root)
        if rel.parts[0] == "persistence":
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SQL.search(line):
                hits.append(f"{rel}:{no}: {line.strip()}")
    return hits


def test_no_sql_outside_persistence() -> None:
    hits = sql_hits(ROOT, SERVER)
    assert not hits, "SQL outside persistence/:\n" + "\n".join(hits)


def test_the_pattern_sees_our_sql() -> None:
    for sql in (
        '"SELECT state, count(*) FROM sessions GROUP BY 1"',
        '"SELECT 1"',
        "INSERT INTO offers (offer_id) VALUES ($1)",
        "UPDATE outbox SET status = 'dead' WHERE id = $1",
        "DELETE FROM favorites WHERE customer_id = $1",
        "CREATE TABLE sessions (",
        '"SELECT pg_try_advisory_lock($1)"',
        "await conn.fetchval(pg_advisory_unlock_all())",
    ):
        assert SQL.search(sql), sql


def test_the_pattern_leaves_prose_alone() -> None:
    for text in (
        "Selected notaries are offered the session, oldest first.",
        "select the best candidate; update the offer set; delete from the queue",
        "the UPDATE of a profile",
        "pg_admin_dsn = dsn",
    ):
        assert not SQL.search(text), text


def test_a_hit_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    (tmp_path / "persistence").mkdir()
    (tmp_path / "gateway" / "bad.py").write_text('x = 1\nq = "SELECT id FROM outbox"\n')
    (tmp_path / "persistence" / "fine.py").write_text('q = "SELECT id FROM outbox"\n')
    assert sql_hits(tmp_path, ("gateway", "persistence")) == [
        'gateway/bad.py:2: q = "SELECT id FROM outbox"'
    ]

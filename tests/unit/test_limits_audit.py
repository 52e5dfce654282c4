"""Issue 13, class 7: the audit backlog prefers legitimate rows (a flood of
refusals cannot push them out)."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from persistence.audit import AuditLog, AuditRecord


def _row(action: str, outcome: str) -> AuditRecord:
    return AuditRecord("ws.request", action, outcome, f"conn/{action}", user_id="u1")


async def test_a_flood_of_refusals_does_not_push_out_legitimate_rows(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="persistence.audit")  # "backlog full" expected
    log = AuditLog(pool, max_pending=10)
    for i in range(4):
        log.record(_row(f"ok {i}", "ok"))
    for i in range(100):
        log.record(_row(f"refused {i}", "refused"))
    for i in range(4, 8):
        log.record(_row(f"ok {i}", "ok"))
    log.record(_row("error", "error"))
    await log.flush()
    rows = await pool.fetch("SELECT action, outcome FROM audit_log ORDER BY id")
    actions = [r["action"] for r in rows]
    # Every legitimate row is there, first; only the newest refusals that fit.
    assert actions[:9] == [f"ok {i}" for i in range(8)] + ["error"]
    assert actions[9:] == ["refused 99"]
    assert log.dropped == 100 - 1


async def test_with_room_every_row_is_kept(pool: asyncpg.Pool) -> None:
    log = AuditLog(pool, max_pending=100, max_batch=3)
    expected = []
    for i in range(10):
        outcome = "refused" if i % 2 else "ok"
        log.record(_row(f"row {i}", outcome))
        expected.append(f"row {i}")
    await log.flush()
    rows = await pool.fetch("SELECT action FROM audit_log")
    assert sorted(r["action"] for r in rows) == sorted(expected)
    assert (log.written, log.dropped) == (10, 0)

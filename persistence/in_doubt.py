"""What became of a commit whose answer was lost.

When the connection drops while a batch is on its way, Postgres may have
committed it (the COMMIT went out, its acknowledgement did not come back) or
not. Telling the appender `Unavailable` would break PROTOCOL §7 ("unavailable
changes nothing") in the first case, and telling it ok would lose the change
in the second. So the writer finds out:

1. the old backend is ended (`pg_terminate_backend`) and awaited until it is
   gone, so its transaction's outcome is final;
2. the batch's journal rows are looked up by `(actor_id, seq, hash)`: a batch
   is one transaction, so one row found means all of it landed.

Until the database answers, the outcome stays unknown and the appenders wait
(an actor whose append is in doubt can do nothing else correctly anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from persistence.events import CONNECTION_ERRORS, Append

logger = logging.getLogger(__name__)

# How long to wait for the old backend to go once it was told to end.
BACKEND_GONE_S = 30.0


def probes(batch: list[Append]) -> list[tuple[str, int, str]]:
    """One journal row per append that has events: `(actor_id, seq, hash)`."""
    return [(a.actor_id, a.events[0].seq, a.events[0].hash) for a in batch if a.events]


async def landed(pool: asyncpg.Pool, backend_pid: int | None, batch: list[Append]) -> bool:
    """Whether `batch`, sent on the backend `backend_pid` whose connection was
    lost, committed. Retries until the database answers; a batch without
    journal rows (a snapshot alone) is reported as not landed: writing it
    again is harmless."""
    rows = probes(batch)
    if not rows:
        return False
    delay = 0.05
    while True:
        try:
            async with pool.acquire() as conn:
                if backend_pid is not None:
                    await _end_backend(conn, backend_pid)
                found = await _count(conn, rows)
        except CONNECTION_ERRORS as exc:
            logger.warning(
                "journal: the outcome of a commit of %d appends is in doubt and the"
                " database is unavailable (%s); asking again in %.1f s",
                len(batch),
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if 0 < found < len(rows):  # one transaction: all or nothing
            logger.error("journal: %d of %d rows of one batch found", found, len(rows))
        logger.warning(
            "journal: a commit of %d appends was in doubt: it %s",
            len(batch),
            "landed" if found else "did not land",
        )
        return found > 0


async def _end_backend(conn: asyncpg.Connection, pid: int) -> None:
    """End the backend `pid` and wait until it is gone: from then on, the
    outcome of its last transaction is final."""
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    except asyncpg.InsufficientPrivilegeError:
        pass  # another role's backend (cannot be ours); waiting below suffices
    deadline = time.monotonic() + BACKEND_GONE_S
    while await conn.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
        if time.monotonic() > deadline:
            logger.error("journal: backend %d did not end within %.0f s", pid, BACKEND_GONE_S)
            return
        await asyncio.sleep(0.02)


async def _count(conn: asyncpg.Connection, rows: list[tuple[str, int, str]]) -> int:
    found: int = await conn.fetchval(
        "SELECT count(*) FROM journal j"
        " JOIN unnest($1::text[], $2::bigint[], $3::text[]) AS p(actor_id, seq, hash)"
        " ON j.actor_id = p.actor_id AND j.seq = p.seq AND j.hash = p.hash",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )
    return found

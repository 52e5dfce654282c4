"""The pool gives connections back without asyncpg's reset query (a round
trip per use, persistence/pool.py): nothing the server does may leave
session state on a pooled connection. These check the two places that take
session-level state: an open transaction, and the delivery leader's
advisory lock (taken on a pooled connection, released before it goes back)."""

from __future__ import annotations

import asyncpg
import pytest

from core.messages import Message
from delivery.leader import LOCK_KEY, DeliveryLeader
from delivery.worker import DeliveryWorker
from persistence.pool import create_pool
from tests.flows import eventually


@pytest.mark.expects_server_errors(
    "asyncpg says it rolls back a transaction left open", match="active transaction"
)
async def test_a_transaction_left_open_is_rolled_back_on_release(database: str) -> None:
    one = await create_pool(database, min_size=1, max_size=1)  # the same backend twice
    try:
        async with one.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("CREATE TEMP TABLE left_open (n int)")
            pid = conn.get_server_pid()
        async with one.acquire() as conn:
            assert conn.get_server_pid() == pid
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await one.close()


def _leader(pool: asyncpg.Pool, led: list[DeliveryWorker]) -> DeliveryLeader:
    def tell(actor: str, msg: Message) -> None:
        raise AssertionError(f"no outbox row exists to deliver ({actor}, {msg.kind})")

    def make() -> DeliveryWorker:
        return DeliveryWorker(pool, {}, tell, max_attempts=1, base_s=1.0, cap_s=1.0)

    return DeliveryLeader(pool, make, led.append)


async def test_the_leaders_lock_is_free_once_it_steps_down(
    pool: asyncpg.Pool, database: str
) -> None:
    """A second gateway's leader (its own pool) takes over
    once the first stops; and the first's pool holds no lock afterwards."""
    other = await create_pool(database, min_size=1, max_size=3)
    first: list[DeliveryWorker] = []
    second: list[DeliveryWorker] = []
    a, b = _leader(pool, first), _leader(other, second)
    try:
        a.start()
        await eventually(lambda: a.leading)
        b.start()
        await a.stop()
        await eventually(lambda: b.leading)
        assert first and second and not a.leading
        # Every connection of the first pool is free of the lock: none can take
        # it now (b holds it), and none holds it (pg_locks shows b's alone).
        holders = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK_KEY,
        )
        assert holders == 1
    finally:
        await b.stop()
        await other.close()

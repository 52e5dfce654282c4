"""Issue 13, class 7: the pieces the limits are made of: the one token
bucket, its keyed (bounded) form, a connection's budget of audited
refusals, and per-key locks that do not outlive their use."""

from __future__ import annotations

import asyncio

from cluster.ratelimit import KeyedBuckets, TokenBucket
from gateway.keyed_locks import KeyedLocks
from gateway.limits import RefusalAudit


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [True] * 4 + [False]
    assert bucket.retry_after() == 1
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token back after 1/rate s
    assert bucket.full(10.0)


def test_keyed_buckets_are_bounded() -> None:
    buckets = KeyedBuckets(rate=1 / 60, capacity=2, max_keys=50)
    assert [buckets.take("1.2.3.4") for _ in range(3)][:2] == [0, 0]
    assert buckets.take("1.2.3.4") >= 59  # a token a minute
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) <= 50


def test_refusal_audit_budget() -> None:
    budget = RefusalAudit(burst=2, interval_s=3600)
    assert [budget.admit("bad_request")[0] for _ in range(5)] == [True, True, False, False, False]
    assert budget.summary() == {"suppressed": 3, "codes": {"bad_request": 3}, "interval_s": 3600}
    assert budget.summary() is None  # counted once


async def test_keyed_locks_do_not_outlive_their_use() -> None:
    locks = KeyedLocks()
    order: list[int] = []
    entered = asyncio.Event()

    async def use(i: int) -> None:
        async with locks.hold("k"):
            entered.set()
            order.append(i)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(use(i)) for i in range(5)]
    await entered.wait()
    assert "k" in locks
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4] and len(locks) == 0

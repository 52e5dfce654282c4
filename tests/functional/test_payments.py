"""Payment events through the outbox, against the real server and Postgres:
a hold and a release for a completed session, a hold and a refund for one
cancelled after the notary was assigned, nothing for one cancelled before."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from tests.conftest import MakeServer
from tests.flows import (
    accept_next_offer,
    assigned_session,
    request_session,
    run_video_to_completion,
)
from tests.functional.test_deliveries import outbox_rows


async def test_payments_for_completed_and_cancelled_sessions(
    make_server: MakeServer, database: str
) -> None:
    h = await make_server(platform_fee_share=0.2)
    customer, notary, sid = await assigned_session(h)  # tariff 100 by default
    await run_video_to_completion(customer, notary, sid)
    c2 = await h.client("c2", "customer")
    sid2 = await request_session(c2, "k2", 2)
    await accept_next_offer(notary, c2, timeout=20)
    await c2.call("session.cancel", {"session_id": sid2, "reason": "no longer needed"})
    c3 = await h.client("c3", "customer")
    sid3 = await request_session(c3, "k3", 3)
    await c3.call("session.cancel", {"session_id": sid3, "reason": "too slow"})

    def payments(rows: list[asyncpg.Record]) -> dict[str, dict[str, Any]]:
        return {
            r["type"]: json.loads(r["payload"])["data"]
            for r in rows
            if r["type"].startswith("payment.")
        }

    done = payments(await outbox_rows(database, sid))
    assert set(done) == {"payment.hold", "payment.release"}
    amount = done["payment.hold"]["amount"]
    assert amount > 0
    assert done["payment.hold"]["platform_fee"] == pytest.approx(amount * 0.2)
    assert done["payment.hold"]["enp_fee"] == pytest.approx(amount * 0.8)
    assert done["payment.release"]["amount"] == amount
    cancelled = payments(await outbox_rows(database, sid2))
    assert set(cancelled) == {"payment.hold", "payment.refund"}
    assert cancelled["payment.refund"]["amount"] == cancelled["payment.hold"]["amount"]
    assert cancelled["payment.refund"]["reason"] == "no longer needed"
    assert payments(await outbox_rows(database, sid3)) == {}  # nothing was held

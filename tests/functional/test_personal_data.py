"""Personal data at rest and in logs, against the real server and Postgres
(issue 4's done-when): no plaintext name, address, ID number or phone in any
table or log record, and a PII key that does not match is a clear error."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Harness, MakeServer
from tests.flows import ADDRESS, ID_NUMBER, NAME, PHONE, http_call
from tests.functional.test_legal_record import notarized_session


async def test_no_plaintext_personal_data_in_the_database_or_the_logs(
    server: Harness, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await notarized_session(server)
    await server.services.audit.flush()
    conn = await asyncpg.connect(database)
    try:
        tables = [
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        dump = "\n".join(
            [
                str(await conn.fetchval(f"SELECT string_agg(t::text, E'\\n') FROM \"{t}\" t"))
                for t in tables
            ]
        )
    finally:
        await conn.close()
    assert "journal" in tables and len(dump) > 1000
    for secret in (NAME, ADDRESS, ID_NUMBER, PHONE, PHONE[1:]):
        assert secret not in dump, f"{secret!r} stored in plaintext"
    assert "pii:v1:" in dump  # it is there, sealed
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert len(caplog.records) > 10
    for secret in (NAME, ADDRESS, ID_NUMBER, PHONE):
        assert secret not in logs, f"{secret!r} in the logs"


@pytest.mark.expects_server_errors("a mismatched PII key is logged as the clear error it is")
async def test_a_pii_key_that_does_not_match_is_a_clear_error(
    make_server: MakeServer, tmp_path: Path
) -> None:
    first = await make_server()
    customer, _, sid = await notarized_session(first)
    envelope_id = f"ENF-{sid}"
    month = (await customer.call("session.join", {"session_id": sid}))["session"]["created_at"][:7]
    await first.close_clients()
    await first.server.close()

    other_key = tmp_path / "other-pii.key"
    await asyncio.to_thread(other_key.write_bytes, base64.b64encode(os.urandom(32)))
    second = await make_server(pii_key_file=other_key)
    admin = second.token("root", "admin")
    for path in (f"/v1/envelopes/{envelope_id}", f"/v1/notaries/n1/book?month={month}"):
        status, body = await http_call(second, "GET", path, admin)
        assert status == 503, (path, body)
        assert "configured key is" in body["error"]["message"], body
    # Verification of the journal needs no key at all.
    assert (await http_call(second, "GET", f"/v1/sessions/{sid}/journal", admin))[0] == 200

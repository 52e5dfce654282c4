"""Issue 14: the audit log is hash-chained, and every refused token leaves a
row. `run.py verify-audit` passes on a real run (refusals included) and names
the row altered, removed or moved behind the application's back; several
writers (the processes of a cluster) extend one chain; what is hashed
survives Postgres exactly; rows from before the chain are accepted only
before it."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import asyncpg
import pytest
from enf_client import EnfClient

from persistence.audit import AuditLog, AuditRecord
from persistence.audit_chain import ChainHead, verify_audit, write_chained
from persistence.pool import create_pool
from tests.conftest import Harness
from tests.flows import (
    assert_token_refused,
    assigned_session,
    bearer,
    eventually,
    http_call,
    run_to_notarized,
)
from tests.pgproxy import TcpProxy
from tests.server_process import run_py

UA = "audit-chain-test/1.0"


async def verify_audit_cli(database: str) -> tuple[int, str]:
    """`run.py verify-audit` on `database`: exit status and output."""
    env = {**os.environ, "ENF_DATABASE_URL": database}
    out = await asyncio.to_thread(run_py, "verify-audit", env=env)
    return out.returncode, out.stdout + out.stderr


async def superuser(database: str) -> asyncpg.Connection:
    """A connection that bypasses the append-only triggers (as a superuser can)."""
    conn = await asyncpg.connect(database)
    await conn.execute("SET session_replication_role = replica")
    return conn


# -- a real run ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_verify_audit_passes_on_a_real_run_and_names_an_altered_row(
    server: Harness, database: str
) -> None:
    customer, notary, sid = await assigned_session(server)
    await run_to_notarized(customer, notary, sid)
    # Refusals of every kind: a 403, a 401, a refused request, refused tokens.
    assert (await http_call(server, "GET", "/v1/audit", server.token("c1", "customer")))[0] == 403
    assert (await http_call(server, "GET", f"/v1/sessions/{sid}", "bad-token"))[0] == 401
    refused = await customer.request("act.seal", {"session_id": sid, "signature": "x"})
    assert refused["ok"] is False
    await assert_token_refused(server, "not.a.token")
    await server.services.audit.flush()
    code, out = await verify_audit_cli(database)
    assert code == 0 and "audit log verifies" in out, out
    conn = await superuser(database)
    try:
        total = await conn.fetchval("SELECT count(*) FROM audit_log WHERE hash IS NOT NULL")
        assert total >= 15
        victim = await conn.fetchval("SELECT id FROM audit_log ORDER BY id OFFSET $1 LIMIT 1", 10)
        await _alterations_are_named(conn, server, database, victim)
    finally:
        await conn.close()


async def _alterations_are_named(
    conn: asyncpg.Connection, server: Harness, database: str, victim: int
) -> None:
    """Each change to row `victim` is named (by the CLI, then the function),
    and undoing it makes the chain whole again."""
    changes = [
        ("user_agent", "coalesce(user_agent, '') || 'x'"),
        ("metadata", "metadata || '{\"extra\": 1}'::jsonb"),
        ("at", "at + interval '1 microsecond'"),
        ("hash", "md5(hash) || md5(hash)"),
        ("prev_hash", "md5(prev_hash) || md5(prev_hash)"),
    ]
    for i, (column, change) in enumerate(changes):
        original = await conn.fetchval(f"SELECT {column} FROM audit_log WHERE id = $1", victim)
        await conn.execute(f"UPDATE audit_log SET {column} = {change} WHERE id = $1", victim)
        if i == 0:
            code, out = await verify_audit_cli(database)
            assert code == 1 and f"BROKEN at id {victim}:" in out, out
        report = await verify_audit(server.services.pool)
        assert not report.valid and report.broken_id == victim, (column, report)
        await conn.execute(f"UPDATE audit_log SET {column} = $2 WHERE id = $1", victim, original)
        assert (await verify_audit(server.services.pool)).valid, column
    # Two rows swapped (their ids).
    after = await conn.fetchval("SELECT min(id) FROM audit_log WHERE id > $1", victim)
    for a, b in ((victim, -1), (after, victim), (-1, after)):
        await conn.execute("UPDATE audit_log SET id = $2 WHERE id = $1", a, b)
    report = await verify_audit(server.services.pool)
    assert not report.valid and report.broken_id == victim and "moved" in (report.reason or "")
    for a, b in ((victim, -1), (after, victim), (-1, after)):
        await conn.execute("UPDATE audit_log SET id = $2 WHERE id = $1", a, b)
    assert (await verify_audit(server.services.pool)).valid
    # A row removed: the one after it is named; the last rows removed: the head says so.
    await conn.execute("DELETE FROM audit_log WHERE id = $1", victim)
    report = await verify_audit(server.services.pool)
    assert not report.valid and report.broken_id == after and "missing" in (report.reason or "")
    await conn.execute("DELETE FROM audit_log WHERE id >= $1", victim)
    code, out = await verify_audit_cli(database)
    assert code == 1 and "BROKEN at its end" in out and "missing" in out, out


# -- refused tokens ----------------------------------------------------------------------------


async def _auth_rows(server: Harness) -> list[dict[str, Any]]:
    """The audit rows of refused tokens (the export flushes the writer first)."""
    admin = server.token("root", "admin")
    status, body = await http_call(server, "GET", "/v1/audit?format=json", admin)
    assert status == 200, body
    return [e for e in body["entries"] if e["event_type"] == "ws.auth"]


async def test_refused_tokens_are_audited_with_address_and_user_agent(server: Harness) -> None:
    bad = server.token("c-forged", "customer", ttl_s=10 * 86400)  # over ENF_MAX_TOKEN_TTL_S
    headers = {"User-Agent": UA}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.ws_url, headers={**bearer(bad), **headers})
        assert err.value.status == 401
        ws = await http.ws_connect(server.ws_url, protocols=("enf.v1.json",), headers=headers)
        await ws.send_str(json.dumps({"type": "hello", "data": {"token": bad}}))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401
    rows = await _auth_rows(server)
    assert [r["action"] for r in rows] == ["GET /v1/ws", "hello"], rows
    for r in rows:
        assert r["outcome"] == "refused" and r["error_code"] == "unauthorized", r
        assert r["ip_address"] == "127.0.0.1" and r["user_agent"] == UA, r
        assert "ENF_MAX_TOKEN_TTL_S" in r["metadata"]["reason"], r
        assert r["user_id"] is None  # what an unverified token claims is not recorded
    assert bad not in json.dumps(rows) and bad.split(".")[2] not in json.dumps(rows)
    # An expired token refused at the door is one more row, no more.
    expired = server.token("c-old", "customer", ttl_s=-10)
    await assert_token_refused(server, expired)
    rows = await _auth_rows(server)
    assert len(rows) == 4 and all("expired" in r["metadata"]["reason"] for r in rows[2:]), rows


async def test_a_token_expiring_on_an_open_connection_is_audited(server: Harness) -> None:
    client = EnfClient(server.ws_url, server.token("c-short", "customer", ttl_s=2))
    await client.connect()
    await asyncio.wait_for(client.closed.wait(), 10)
    await client.close()
    assert client.close_code == 4401
    await eventually(lambda: not server.connections_of("c-short"))  # its row is queued then
    rows = await _auth_rows(server)
    assert [(r["action"], r["user_id"]) for r in rows] == [("token.expired", "c-short")], rows
    assert rows[0]["ip_address"] == "127.0.0.1" and rows[0]["user_agent"], rows
    assert rows[0]["outcome"] == "refused" and rows[0]["error_code"] == "unauthorized"


# -- the writer --------------------------------------------------------------------------------


def _row(i: int, **extra: Any) -> AuditRecord:
    return AuditRecord("ws.request", f"act {i}", "ok", f"conn/{i}", user_id=f"u{i % 7}", **extra)


@pytest.mark.expects_server_errors("rows Postgres refuses", match="audit row refused")
async def test_writers_of_several_processes_extend_one_chain(
    pool: asyncpg.Pool, database: str
) -> None:
    """Three writers, each with its own pool (as three processes), in small
    batches at once: one chain, in id order, a refused row nowhere in it."""
    pools = [await create_pool(database, min_size=1, max_size=1) for _ in range(3)]
    logs = [AuditLog(p, max_batch=7) for p in pools]
    try:
        for i in range(300):
            bad = {"user_agent": "nul\x00"} if i % 50 == 49 else {}
            logs[i % 3].record(_row(i, **bad))
        await asyncio.gather(*(log.flush() for log in logs))
    finally:
        for p in pools:
            await p.close()
    assert sum(log.written for log in logs) == 294 and sum(log.refused for log in logs) == 6
    report = await verify_audit(pool)
    assert report.valid and report.rows == 294 and report.unchained == 0, report
    seqs = [r["chain_seq"] for r in await pool.fetch("SELECT chain_seq FROM audit_log ORDER BY id")]
    assert seqs == list(range(1, 295))


async def test_a_flush_returns_once_rows_another_flush_holds_are_written(
    pool: asyncpg.Pool, database: str
) -> None:
    """The export flushes the writer, then reads: a flush that finds the
    queue empty because the background loop's flush has taken the rows must
    wait for those to be committed (a token expiry's row was missing from an
    export so). The writer's database is slow here (a proxy adds 0.1 s each
    way); the reader's is not."""
    async with TcpProxy.to_dsn(database) as proxy:
        slow = await create_pool(proxy.dsn(database), min_size=1, max_size=2)
        try:
            log = AuditLog(slow)
            log.record(_row(1))
            proxy.latency(0.1)
            background = asyncio.get_running_loop().create_task(log.flush())
            await asyncio.sleep(0)  # one step: it takes the row, then waits on the database
            assert log.backlog == 0 and not background.done()
            await log.flush()  # the export's
            assert await pool.fetchval("SELECT count(*) FROM audit_log") == 1
            await background
        finally:
            proxy.latency(0)
            await slow.close()


@pytest.mark.expects_server_errors("a NaN jsonb refuses", match="audit row refused")
async def test_what_is_hashed_survives_postgres(pool: asyncpg.Pool) -> None:
    """Values that Postgres keeps in another form (a float jsonb returns as an
    integer, -0.0, a time zone, deep and odd text) verify after the trip, by
    both ways of writing: the locked one (COPY, a writer that does not know
    the head yet) and the one statement (the rows as JSON text)."""
    manila = timezone(timedelta(hours=8))
    log = AuditLog(pool)

    def odd(n: int) -> None:
        log.record(
            _row(
                n,
                user_agent='Mozilla/5.0 (ünïcödé ✓ 🙂) "quoted" \\ back\tslash\n',
                metadata={
                    "floats": [1e16, 1.5e300, -0.0, 0.1, 1e-7, 2.5],
                    "big": 10**30,
                    "nested": {"b": [None, True, {"z": "\u2028"}], "a": ""},
                },
                at=datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=manila),
            )
        )
        log.record(_row(n + 1, at=datetime(2026, 3, 1, 0, 0, 0, 1)))  # naive: taken as UTC

    odd(1)
    log.record(_row(3, metadata={"nan": float("nan")}))  # jsonb refuses it: dropped alone
    await log.flush()
    assert (log.written, log.refused) == (2, 1)
    odd(4)  # the writer knows the head now: one statement
    # A year whose hashed text is not ISO 8601 (not padded, as always hashed).
    log.record(_row(6, at=datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC)))
    await log.flush()
    assert (log.written, log.refused) == (5, 1)
    report = await verify_audit(pool)
    assert report.valid and report.rows == 5, report
    rows = await pool.fetch("SELECT at, user_agent, metadata FROM audit_log ORDER BY id")
    assert [r["at"] for r in rows] == [
        datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    ]
    assert rows[0]["user_agent"] == rows[2]["user_agent"]
    assert rows[0]["metadata"] == rows[2]["metadata"]


@pytest.mark.slow
async def test_rows_from_before_the_chain_only_come_first(
    pool: asyncpg.Pool, database: str
) -> None:
    legacy = (
        "INSERT INTO audit_log (at, event_type, action, outcome, correlation_id)"
        " VALUES (now(), 'http.request', 'GET /v1/old', 'ok', 'old')"
    )
    await pool.execute(legacy)
    await pool.execute(legacy)
    log = AuditLog(pool)
    for i in range(3):
        log.record(_row(i))
    await log.flush()
    report = await verify_audit(pool)
    assert report.valid and (report.unchained, report.rows) == (2, 3), report
    code, out = await verify_audit_cli(database)
    assert code == 0 and "3 chained rows (after 2 unchained)" in out, out
    # An unchained row after the chain began is named.
    await pool.execute(legacy)
    late = await pool.fetchval("SELECT max(id) FROM audit_log")
    report = await verify_audit(pool)
    assert (
        not report.valid and report.broken_id == late and "without a hash" in (report.reason or "")
    )


async def test_http_refusals_are_audited_under_the_contracts_codes(server: Harness) -> None:
    status, _ = await http_call(server, "GET", "/v1/sessions?state=REQUESTED", "not-a-token")
    assert status == 401
    customer = server.token("c1", "customer")
    assert (await http_call(server, "GET", "/v1/audit", customer))[0] == 403
    admin = server.token("admin-1", "admin")
    status, body = await http_call(server, "GET", "/v1/audit?format=json", admin)
    assert status == 200
    seen = {(e["action"], e["error_code"]) for e in body["entries"]}
    assert ("GET /v1/sessions", "unauthorized") in seen
    assert ("GET /v1/audit", "forbidden") in seen
    assert not {code for _, code in seen if code is not None and code.isdigit()}


async def test_a_writer_behind_another_takes_the_locked_way(pool: asyncpg.Pool) -> None:
    """A writer writes after the head it knows in one statement; when another
    writer moved the head since, that statement writes nothing and the rows
    go the locked way, after the real head."""
    a, b = ChainHead(), ChainHead()
    async with pool.acquire() as conn:
        await write_chained(conn, [_row(1).fields()], a)  # locked: a knew nothing
        assert a.seq == 1
        await write_chained(conn, [_row(2).fields(), _row(3).fields()], a)  # one statement
        assert a.seq == 3
        await write_chained(conn, [_row(4).fields()], b)  # b reads the head: 4
        await write_chained(conn, [_row(5).fields()], a)  # a is stale: 0 rows, then locked
        assert (a.seq, b.seq) == (5, 4)
        await write_chained(conn, [_row(6).fields()], b)  # b is stale too
    report = await verify_audit(pool)
    assert report.valid and report.rows == 6, report
    rows = await pool.fetch("SELECT chain_seq, action FROM audit_log ORDER BY id")
    assert [(r["chain_seq"], r["action"]) for r in rows] == [(i, f"act {i}") for i in range(1, 7)]

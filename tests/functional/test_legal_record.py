"""The legal record against the real server and Postgres: journal
verification, the signed TRUTH envelope and the audit trail (issue 4's
done-when; the notarial book: test_notarial_book.py; personal data at rest:
test_personal_data.py, both on `notarized_session` here)."""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from enf_client import EnfClient

from persistence.keys import Signer, load_public_keys, verify_signed
from persistence.pool import create_pool
from persistence.verify import verify_journal
from tests.conftest import Harness
from tests.flows import (
    ADDRESS,
    ID_NUMBER,
    NAME,
    PHONE,
    doc,
    end_and_notarize,
    http_call,
    in_the_call,
    online_notary,
    sign_and_seal,
)
from tests.served import Served
from tests.server_process import run_py


async def notarized_session(h: Served) -> tuple[EnfClient, EnfClient, str]:
    notary = await online_notary(h, "n1", name="Atty. Juan Cruz", license_number="ENP-2026-001")
    customer = await h.client("c1", "customer", kyc_session_id="kyc-1", face_match_score=0.97)
    sid = (
        await customer.call(
            "session.request",
            {
                "idempotency_key": "legal",
                "document": doc(7),
                "principal": {
                    "name": NAME,
                    "address": ADDRESS,
                    "id_type": "passport",
                    "id_number": ID_NUMBER,
                },
            },
        )
    )["session_id"]
    offer = await notary.expect("offer")
    await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    await in_the_call(customer, notary, sid)
    # A refused request is part of the record too.
    refused = await customer.request("act.seal", {"session_id": sid, "signature": "x", "seal": "y"})
    assert refused["error"]["code"] == "forbidden"
    await sign_and_seal(
        customer,
        notary,
        sid,
        signature="Y3VzdG9tZXItc2ln",
        enp_signature="ZW5wLXNpZw==",
        seal="c2VhbA==",
    )
    await end_and_notarize(customer, notary, sid)
    await customer.call(
        "session.distribute",
        {"session_id": sid, "recipients": [{"channel": "sms", "to": PHONE}]},
    )
    await customer.expect("session.state", state="DISTRIBUTING")
    return customer, notary, sid


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS` with `env` added to this environment, in a thread."""
    return await asyncio.to_thread(run_py, *args, env={**os.environ, **(env or {})})


# -- 1. the journal ------------------------------------------------------------------


def _flip(text: str) -> str:
    """Change one character near the middle (a different hex digit, letter or digit)."""
    i = len(text) // 2
    while not text[i].isalnum():
        i += 1
    c = text[i]
    new = "0" if c != "0" else "1"
    return text[:i] + new + text[i + 1 :]


async def test_the_journal_verifies_and_any_altered_row_is_named(
    server: Harness, database: str, tmp_path: Path
) -> None:
    _, _, sid = await notarized_session(server)
    actor = f"session:{sid}"
    pool = await create_pool(database, min_size=1, max_size=2)
    admin = await asyncpg.connect(database)
    try:
        report = await verify_journal(pool, actor)
        assert report.valid and report.rows >= 12, report
        cli = await run_cli("verify-journal", sid, env={"ENF_DATABASE_URL": database})
        assert cli.returncode == 0 and "journal verifies" in cli.stdout, cli.stdout + cli.stderr
        none = await run_cli(
            "verify-journal",
            "00000000-0000-0000-0000-000000000000",
            env={"ENF_DATABASE_URL": database},
        )
        assert none.returncode == 2 and "no journal rows" in none.stdout

        # The application cannot change the journal at all.
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await admin.execute("UPDATE journal SET name = 'x' WHERE actor_id = $1", actor)

        # A superuser can, bypassing the triggers; verification names the row.
        await admin.execute("SET session_replication_role = replica")
        for seq, column in ((3, "data"), (5, "name"), (6, "hash"), (7, "prev_hash"), (4, "at")):
            original = await admin.fetchval(
                f"SELECT {column}::text FROM journal WHERE actor_id = $1 AND seq = $2", actor, seq
            )
            if column == "at":
                # One microsecond later: below the hashed precision, still caught.
                await admin.execute(
                    "UPDATE journal SET at = at + interval '1 microsecond'"
                    " WHERE actor_id = $1 AND seq = $2",
                    actor,
                    seq,
                )
            else:
                cast = "::jsonb" if column == "data" else ""
                await admin.execute(
                    f"UPDATE journal SET {column} = $3{cast} WHERE actor_id = $1 AND seq = $2",
                    actor,
                    seq,
                    _flip(original),
                )
            report = await verify_journal(pool, actor)
            assert not report.valid and report.broken_seq == seq, (column, report)
            cli = await run_cli("verify-journal", sid, env={"ENF_DATABASE_URL": database})
            assert cli.returncode == 1 and f"BROKEN at seq {seq}" in cli.stdout, cli.stdout
            cast = (
                "::jsonb" if column == "data" else "::text::timestamptz" if column == "at" else ""
            )
            await admin.execute(
                f"UPDATE journal SET {column} = $3{cast} WHERE actor_id = $1 AND seq = $2",
                actor,
                seq,
                original,
            )
            assert (await verify_journal(pool, actor)).valid

        # Reordering two rows (their seq swapped).
        async def swap() -> None:
            for a, b in ((8, 999_999), (9, 8), (999_999, 9)):
                await admin.execute(
                    "UPDATE journal SET seq = $3 WHERE actor_id = $1 AND seq = $2", actor, a, b
                )

        await swap()
        report = await verify_journal(pool, actor)
        assert not report.valid and report.broken_seq == 8, report
        await swap()
        assert (await verify_journal(pool, actor)).valid
        # Deleting a row in the middle, then the last one.
        head = report.rows
        await admin.execute("DELETE FROM journal WHERE actor_id = $1 AND seq = 4", actor)
        report = await verify_journal(pool, actor)
        assert not report.valid and report.broken_seq == 4, report
        await admin.execute(
            "DELETE FROM journal WHERE actor_id = $1 AND seq > 4", actor
        )  # only 1..3 remain: a valid-looking, shorter chain
        report = await verify_journal(pool, actor)
        assert not report.valid and report.broken_seq == 4 and "missing" in (report.reason or "")
        assert head > 4
    finally:
        await admin.close()
        await pool.close()


# -- 2. the envelope -------------------------------------------------------------------


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    return [path]


def _altered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    return [*value, "x"]


async def test_the_envelope_verifies_offline_and_any_change_fails(
    server: Harness, tmp_path: Path
) -> None:
    customer, _, sid = await notarized_session(server)
    token = server.token("c1", "customer")
    snap = await customer.call("session.join", {"session_id": sid})
    envelope_id = snap["session"]["envelope_id"]
    status, signed = await http_call(server, "GET", f"/v1/envelopes/{envelope_id}", token)
    assert status == 200
    keys_json = json.dumps((await http_call(server, "GET", "/v1/keys"))[1])
    # Someone else's envelope does not exist for them.
    other = server.token("c9", "customer")
    assert (await http_call(server, "GET", f"/v1/envelopes/{envelope_id}", other))[0] == 404
    # The server's own verdicts.
    verify = "/v1/envelopes/verify"
    assert await http_call(server, "POST", verify, json=signed) == (200, {"valid": True})
    bad = copy.deepcopy(signed)
    bad["envelope"]["customer"]["name"] = "Someone Else"
    status, body = await http_call(server, "POST", verify, json=bad)
    assert status == 200 and body["valid"] is False and body["reason"]
    assert (await http_call(server, "POST", verify, json={"hello": 1}))[0] == 400

    env = signed["envelope"]
    assert env["uid"] == envelope_id == f"ENF-{sid}"
    assert env["customer"]["name"] == NAME and env["customer"]["id_number"] == ID_NUMBER
    assert env["customer"]["kyc_session_id"] == "kyc-1"
    assert env["enp"]["license_number"] == "ENP-2026-001" and env["enp"]["notarization_seal"]
    assert env["session"]["comprehension_confirmed"] and env["session"]["duress_check_passed"]
    assert env["journal"]["seq"] > 0 and len(env["journal"]["head_hash"]) == 64
    assert env["compliance"]["retention_until"] > env["timestamp"]

    # Offline, with only the public key.
    await asyncio.to_thread((tmp_path / "envelope.json").write_text, json.dumps(signed))
    await asyncio.to_thread((tmp_path / "keys.json").write_text, keys_json)
    ok = await run_cli(
        "verify-envelope",
        str(tmp_path / "envelope.json"),
        "--public-key",
        str(tmp_path / "keys.json"),
    )
    assert ok.returncode == 0 and "VALID" in ok.stdout, ok.stdout + ok.stderr

    keys = load_public_keys(keys_json)
    leaves = _leaves(env)
    assert len(leaves) > 25
    for path in leaves:
        bad = copy.deepcopy(signed)
        node = bad["envelope"]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = _altered(node[path[-1]])
        valid, reason = verify_signed(bad, keys)
        assert not valid and reason, path
    await asyncio.to_thread((tmp_path / "altered.json").write_text, json.dumps(bad))
    altered = await run_cli(
        "verify-envelope",
        str(tmp_path / "altered.json"),
        "--public-key",
        str(tmp_path / "keys.json"),
    )
    assert altered.returncode == 1 and "INVALID" in altered.stdout

    # Signed with another key: unknown key id, or a forged key id.
    other_signer = Signer(Ed25519PrivateKey.generate())
    forged = other_signer.sign(env)
    assert verify_signed(forged, keys)[0] is False
    forged["key_id"] = signed["key_id"]
    valid, reason = verify_signed(forged, keys)
    assert not valid and "signature does not match" in (reason or "")
    junks: tuple[Any, ...] = (
        None,
        [],
        {"envelope": 1, "signature": 2, "key_id": 3},
        {**signed, "signature": "!!"},
    )
    for junk in junks:
        assert verify_signed(junk, keys)[0] is False


# -- 3. the audit trail ---------------------------------------------------------------------


async def test_the_audit_export_covers_every_request_of_a_session(
    server: Harness, database: str
) -> None:
    customer, notary, sid = await notarized_session(server)
    sent = [
        f for c in (customer, notary) for f in c.sent if f.get("data", {}).get("session_id") == sid
    ]
    admin = server.token("root", "admin")
    status, body = await http_call(
        server,
        "GET",
        f"/v1/audit?session_id={sid}&format=json",
        admin,
        headers={"User-Agent": "audit-test"},
    )
    assert status == 200
    entries = body["entries"]
    status, text = await http_call(
        server, "GET", f"/v1/audit?session_id={sid}&format=csv", admin, content_type="text/csv"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert (await http_call(server, "GET", "/v1/audit", server.token("c1", "customer")))[0] == 403
    assert (await http_call(server, "GET", "/v1/audit?from=yesterday", admin))[0] == 400
    ws = [e for e in entries if e["event_type"] == "ws.request"]
    got = {e["correlation_id"].split("/", 1)[1] for e in ws}
    assert {str(f["id"]) for f in sent} <= got
    refused = [e for e in ws if e["outcome"] == "refused"]
    assert any(e["action"] == "act.seal" and e["error_code"] == "forbidden" for e in refused)
    assert all(e["resource_id"] == sid and e["ip_address"] for e in ws)
    assert {e["user_id"] for e in ws} == {"c1", "n1"}
    assert len(rows) == len(entries) and {r["correlation_id"] for r in rows} == {
        e["correlation_id"] for e in entries
    }
    # The application cannot rewrite it.
    conn = await asyncpg.connect(database)
    try:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("DELETE FROM audit_log")
    finally:
        await conn.close()

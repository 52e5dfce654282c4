"""Issue 13, class 6 and the request-id rule (PROTOCOL §8): what a WebSocket
accepts as its credentials and its request ids.

- A token works until its `exp`: then the connection is closed with 4401
  and reads no more frames.
- A token whose lifetime (`exp` - `iat`) exceeds ENF_MAX_TOKEN_TTL_S, whose
  `sub` is not an identifier, or whose claims have the wrong types, is
  refused (HTTP 401 before the upgrade, 4401 after `hello`), never a 500.
- The server refuses to start with a JWT secret under 32 bytes unless
  ENF_ALLOW_WEAK_SECRET says it is a trial.
- A request id with NUL or an unpaired surrogate, or over 128 characters,
  is refused with `re: null`; the connection and its writer carry on.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from enf_client import EnfClient
from jwt.warnings import InsecureKeyLengthWarning

from gateway.auth import mint_token
from tests.conftest import JWT_SECRET, Harness, MakeServer
from tests.flows import assert_token_refused, bearer, doc, http_call
from tests.server_process import ServerProcess, run_py, server_env

DAY = 24 * 3600


def _signed(**claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "u1", "type": "customer", "kyc_verified": True, "iat": now, "exp": now + 60}
    body.update(claims)
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


async def _accepted(server: Harness, token: str) -> None:
    c = EnfClient(server.ws_url, token)
    await c.connect()
    try:
        assert "server_time" in await c.call("ping")
    finally:
        await c.close()


# -- an open connection's token expires --------------------------------------------------------


@pytest.mark.parametrize("hello", [False, True])
async def test_expired_token_closes_the_connection_with_4401(server: Harness, hello: bool) -> None:
    token = server.token("c-short", "customer", ttl_s=2)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    c = EnfClient(server.ws_url, token, hello=hello)
    await c.connect()
    assert "server_time" in await c.call("ping")  # valid until exp
    await asyncio.wait_for(c.closed.wait(), 10)
    await c.close()
    assert c.close_code == 4401
    assert time.time() >= exp - 0.05  # at exp, not before
    # A fresh token opens a new connection.
    await _accepted(server, server.token("c-short", "customer"))


async def test_no_frame_is_read_after_expiry(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await server.client("c-late", "customer", ttl_s=2)
    [conn] = server.connections_of("c-late")
    expired = asyncio.Event()
    closes: list[int] = []

    async def close_later(code: int, message: str) -> None:
        closes.append(code)
        expired.set()

    # The close is held back: frames that arrive before it is sent are not read.
    monkeypatch.setattr(conn, "_close", close_later)
    await asyncio.wait_for(expired.wait(), 10)
    assert closes == [4401]
    late = {"idempotency_key": "late", "document": doc()}
    conn.on_frame(json.dumps({"id": "late", "type": "session.request", "data": late}))
    assert not conn.in_flight()
    await c.close()


# -- tokens refused at the door ----------------------------------------------------------------


async def test_token_lifetime_is_capped(make_server: MakeServer) -> None:
    server = await make_server()
    now = int(time.time())
    await _accepted(server, _signed(iat=now, exp=now + DAY))  # the default cap: one day
    await assert_token_refused(server, _signed(iat=now, exp=now + DAY + 1))
    await assert_token_refused(server, _signed(iat=now, exp=now + 100 * 365 * DAY))
    # Lifetime, not time left: issued long ago, valid for another minute.
    await assert_token_refused(server, _signed(iat=now - 2 * DAY, exp=now + 60))
    short = await make_server(max_token_ttl_s=300)
    await _accepted(short, _signed(iat=now, exp=now + 300))
    await assert_token_refused(short, _signed(iat=now, exp=now + 3600))


@pytest.mark.parametrize(
    "sub", ["../../etc/x", "a/b", "a b", "x" * 129, "", "caf\u00e9", "a:b", "nul\x00"]
)
async def test_sub_must_be_an_identifier(server: Harness, sub: str) -> None:
    await assert_token_refused(server, _signed(sub=sub))


async def test_sub_of_the_identifier_alphabet_is_accepted(server: Harness) -> None:
    await _accepted(server, _signed(sub="Jo.Cruz-2_x@example.ph"))
    await _accepted(server, _signed(sub="x" * 128))


@pytest.mark.parametrize(
    "claims",
    [
        {"type": ["customer"]},
        {"type": {"customer": 1}},
        {"sub": ["u1"]},
        {"exp": float("inf")},
        {"exp": str(int(time.time()) + 60)},
        {"iat": True},
    ],
    ids=["type-list", "type-object", "sub-list", "exp-infinite", "exp-string", "iat-bool"],
)
async def test_claims_of_the_wrong_type_areassert_token_refused(
    server: Harness, claims: dict[str, Any]
) -> None:
    await assert_token_refused(server, _signed(**claims))
    # Also on the HTTP API (gateway/http/access.py verifies the same way).
    status, body = await http_call(server, "GET", "/v1/sessions", _signed(**claims))
    assert status == 401 and body["error"]["code"] == "unauthorized", body


# -- the JWT secret at start-up ----------------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENF_")}
    return {**env, **extra}


@pytest.mark.slow
def test_refuses_to_start_with_a_weak_secret(tmp_path: Path) -> None:
    env = _clean_env(ENF_JWT_SECRET="CHANGE-ME", ENF_DATA_DIR=str(tmp_path), ENF_PORT="0")
    out = run_py(env=env, timeout=60)
    assert out.returncode == 2, out
    assert "cannot start" in out.stderr and "ENF_ALLOW_WEAK_SECRET" in out.stderr
    assert "listening" not in out.stdout
    assert not (tmp_path / "pg").exists()  # refused before anything was started


@pytest.mark.slow
async def test_weak_secret_for_a_trial_only(database: str, tmp_path: Path) -> None:
    weak = "0123456789abcdef"  # 16 bytes
    env = server_env(database, tmp_path, ENF_JWT_SECRET=weak, ENF_ALLOW_WEAK_SECRET="1")
    proc = ServerProcess(env, tmp_path / "server.log")
    await proc.start(timeout=60)
    try:
        with warnings.catch_warnings():  # PyJWT agrees that the key is short
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            token = mint_token(weak, "c1", "customer")
        c = EnfClient(proc.ws_url, token)
        await c.connect()
        assert "server_time" in await c.call("ping")
        await c.close()
    finally:
        assert await proc.stop() == 0
    log = await asyncio.to_thread((tmp_path / "server.log").read_text)
    assert "ENF_ALLOW_WEAK_SECRET is set" in log


# -- request ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_id",
    ['"\\ud800"', '"a\\udfffb"', '"nul\\u0000"', json.dumps("x" * 129), '""', "true", "1.5"],
    ids=["lone-high", "lone-low", "nul", "129-chars", "empty", "bool", "float"],
)
async def test_bad_request_ids_are_refused_and_the_writer_lives(
    server: Harness, raw_id: str
) -> None:
    c = await server.client("c1", "customer")
    assert c.ws is not None
    await c.ws.send_str(f'{{"id":{raw_id},"type":"ping","data":{{}}}}')
    [refusal] = await c.wait(lambda: c.orphan_replies)
    assert refusal["re"] is None and refusal["error"]["code"] == "bad_request", refusal
    assert not c.closed.is_set()
    assert "server_time" in await c.call("ping")  # the writer is alive


@pytest.mark.parametrize(
    "rid", ["\U0001f600 ok", "x" * 128, "é-ß-中", 7], ids=["pair", "128", "unicode", "int"]
)
async def test_good_request_ids_are_answered_with_themselves(server: Harness, rid: Any) -> None:
    c = await server.client("c1", "customer")
    reply = await c.request("ping", id=rid)
    assert reply["re"] == rid and reply["ok"]


@pytest.mark.parametrize(
    ("codec", "spelled"),
    # JSON carries the lone surrogate as an escape, read back as itself;
    # msgpack's strings are UTF-8 only: it is spelled out.
    [("json", "a\ud800b"), ("msgpack", "a\\ud800b")],
)
async def test_an_unpaired_surrogate_on_the_way_out_does_not_kill_the_writer(
    server: Harness, codec: str, spelled: str
) -> None:
    c = await server.client("c1", "customer", codec=codec)
    [conn] = server.connections_of("c1")
    conn.send({"type": "event", "topic": "t", "name": "probe", "data": {"x": "a\ud800b"}})
    probe = await c.expect("probe")
    assert probe["data"]["x"] == spelled
    assert "server_time" in await c.call("ping")


async def test_ws_audit_rows_are_storable(server: Harness, database: str) -> None:
    # A raw socket: the test client cannot send what is not UTF-8 once encoded.
    token = server.token("c-audit", "customer")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.ws_url, headers=bearer(token)) as ws,
    ):
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.send_str('{"id":"a1","type":"no.such\\ud800type\\u0000","data":{}}')
        refused = await ws.receive_json(timeout=5)
    assert refused["re"] == "a1" and refused["error"]["code"] == "bad_request"
    await server.services.audit.flush()
    assert server.services.audit.refused == 0
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT action, correlation_id FROM audit_log WHERE user_id = $1", "c-audit"
        )
    finally:
        await conn.close()
    assert [r["action"] for r in rows] == ["no.such\ufffdtype"]

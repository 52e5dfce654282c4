"""Input from outside, at the edge (issue 13, classes 1, 2 and 9): identifiers
follow PROTOCOL §8 in paths and requests (400 / `bad_request`), text that
reaches a row is storable, absurd values get a 4xx (never a 500), the
database being away gets a 503, and no audit row a client shapes can stop
the audit log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from enf_client.codec import JsonCodec
from yarl import URL

from tests.conftest import Harness, MakeServer
from tests.flows import assigned_session, doc, http_call, online_notary

SID = "0ada666e-d635-5c58-a410-7ed97dfa2e0c"


async def raw_get(h: Harness, path: bytes, headers: bytes) -> bytes:
    """A GET written byte for byte (headers a client library would refuse):
    the status line of the answer."""
    url = URL(h.base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
        writer.write(headers + b"\r\n\r\n")
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


class AsciiJson(JsonCodec):
    """JSON with escapes (`\\ud800`): how a client sends a lone surrogate."""

    def encode(self, msg: dict[str, Any]) -> str:
        return json.dumps(msg)


def refused(status: int, body: Any, expected: int, code: str) -> None:
    assert status == expected, (status, body)
    assert body["error"]["code"] == code and body["error"]["message"], body


BAD_PATHS = [
    # A NUL, a space, a colon, an escaped slash: not identifiers (PROTOCOL §8).
    ("GET", "/v1/sessions/%00"),
    ("GET", "/v1/sessions/%00/journal"),
    ("GET", "/v1/sessions/a%20b/recording"),
    ("GET", "/v1/envelopes/%00"),
    ("GET", "/v1/envelopes/a:b/shared?expires=1&sig=x"),
    ("GET", "/v1/notaries/%00/book"),
    ("PUT", "/v1/notaries/a%00b"),
    ("PUT", "/v1/customers/x%00/favorites"),
    ("GET", "/v1/deliveries/%00"),
    ("POST", "/v1/deliveries/%00/replay"),
    ("GET", "/v1/deliveries?session_id=%00"),
    ("GET", "/v1/audit?user_id=%00"),
    ("GET", "/v1/audit?session_id=a%20b"),
    (
        "GET",
        f"/v1/recordings/{SID}/..%5C..%5Cjwt.secret?expires=9999999999&sig=x",
    ),
]


@pytest.mark.parametrize(("method", "path"), BAD_PATHS)
async def test_ids_in_paths_and_queries_are_identifiers(
    server: Harness, method: str, path: str
) -> None:
    status, body = await http_call(
        server, method, path, server.token("ops", "admin"), json={"notary_ids": []}
    )
    refused(status, body, 400, "bad_request")


async def test_absurd_values_are_refused_not_crashed_on(server: Harness) -> None:
    admin = server.token("ops", "admin")
    for path in (
        "/v1/notaries/n1/book?month=9999-12",
        "/v1/notaries/n1/book?month=0000-01",
        "/v1/audit?from=0001-01-01T00:00:00%2B01:00",
        "/v1/audit?to=9999-12-31T23:59:59-01:00",
        "/v1/sessions?limit=" + "9" * 5000,
    ):
        status, body = await http_call(server, "GET", path, admin)
        refused(status, body, 400, "bad_request")
    # Deeply nested JSON: refused, not a RecursionError.
    for raw in ("[" * 30_000 + "]" * 30_000, '{"envelope":' + "[" * 200 + "]" * 200 + "}"):
        status, body = await http_call(
            server,
            "POST",
            "/v1/envelopes/verify",
            data=raw,
            headers={"Content-Type": "application/json"},
        )
        refused(status, body, 400, "bad_request")
    assert (await http_call(server, "GET", "/health"))[0] == 200


async def test_audit_keeps_going_after_rows_it_cannot_store(server: Harness) -> None:
    """A NUL in a query string, a path id and a request id reaches audit rows;
    the rows after them are still written, and the export answers."""
    admin = server.token("ops", "admin")
    await http_call(server, "GET", "/v1/keys?q=%00")
    await http_call(server, "GET", "/v1/sessions/%00", admin)
    # Bytes that are not UTF-8 in headers reach the server as lone surrogates.
    assert await raw_get(
        server, b"/v1/keys", b"User-Agent: a\xff\xfeb\r\nX-Request-Id: r\xed\xa0\x80"
    )
    await http_call(server, "GET", "/v1/keys?after=1")
    status, body = await http_call(server, "GET", "/v1/audit?format=json", admin)
    assert status == 200, body
    actions = [(e["action"], e["metadata"]["query"]) for e in body["entries"]]
    assert ("GET /v1/keys", {"q": ""}) in actions
    assert ("GET /v1/keys", {"after": "1"}) in actions
    assert server.services.audit.refused == 0  # sanitised before: nothing to drop


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("session.join", {"session_id": "../../etc"}),
        ("session.join", {"session_id": "{" + SID + "}"}),
        ("session.cancel", {"session_id": "a b", "reason": "x"}),
        ("session.request", {"idempotency_key": "k", "document": {**doc(), "id": "../d"}}),
        ("session.request", {"idempotency_key": "k", "document": {**doc(), "title": "a\ud800"}}),
        ("session.request", {"idempotency_key": "k\udc00", "document": doc()}),
        (
            "session.request",
            {"idempotency_key": "k", "document": doc(), "preferred_notary_id": "n\x00"},
        ),
        (
            "session.request",
            {"idempotency_key": "k", "document": doc(), "principal": {"name": "\ud83d"}},
        ),
    ],
)
async def test_request_fields_are_identifiers_and_storable(
    server: Harness, type_: str, data: dict[str, Any]
) -> None:
    c = await server.client("c1", "customer")
    c.codec = AsciiJson()
    reply = await c.request(type_, data)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert (await c.request("ping", {}))["ok"] is True


async def test_notary_and_signal_ids(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    r = await notary.request("offer.accept", {"offer_id": "../x"})
    assert r["error"]["code"] == "bad_request", r
    r = await customer.request(
        "signal", {"session_id": sid, "to": "../n1", "kind": "ice", "candidate": {"candidate": ""}}
    )
    assert r["error"]["code"] == "bad_request", r
    r = await customer.request("session.cancel", {"session_id": sid, "reason": "nul\x00"})
    assert r["error"]["code"] == "bad_request", r
    other = await online_notary(server, "n2")
    assert (await other.request("ping", {}))["ok"] is True


async def test_the_journal_route_answers_503_while_the_database_is_away(
    make_server: MakeServer, database: str
) -> None:
    h = await make_server()
    _customer, _notary, sid = await assigned_session(h)
    admin = h.token("ops", "admin")
    assert (await http_call(h, "GET", f"/v1/sessions/{sid}/journal", admin))[0] == 200
    pool = h.services.pool
    # The database goes away: every new connection is refused.
    pool.set_connect_args("postgresql://postgres@127.0.0.1:1/nowhere", command_timeout=30)
    await pool.expire_connections()
    try:
        for path in (f"/v1/sessions/{sid}/journal", "/v1/audit"):
            status, body = await http_call(h, "GET", path, admin)
            refused(status, body, 503, "unavailable")
    finally:
        pool.set_connect_args(database, command_timeout=30)
        await pool.expire_connections()
    assert (await http_call(h, "GET", f"/v1/sessions/{sid}/journal", admin))[0] == 200

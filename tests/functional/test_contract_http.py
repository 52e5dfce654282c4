"""Issue 17: the parts of the HTTP contract (PROTOCOL §6, §8) that no other
test held to one outcome: a body over the limit is 413 `too_large`, every
refusal is the JSON error body with its matching status, and the audit
export's `from` / `to` range."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.conftest import Harness
from tests.flows import ADMIN, assigned_session, http_call, online_notary


def refused(answer: tuple[int, Any], status: int, code: str) -> None:
    got, body = answer
    assert got == status, answer
    assert body["error"]["code"] == code and body["error"]["message"], body


async def test_a_body_over_the_limit_is_413_too_large(server: Harness) -> None:
    admin = server.token(ADMIN, "admin")
    big = b"{" + b" " * 70_000 + b"}"
    for method, path, token in (
        ("POST", "/v1/envelopes/verify", None),
        ("PUT", "/v1/notaries/n1", admin),
        ("PUT", "/v1/customers/c1/favorites", admin),
    ):
        answer = await http_call(
            server, method, path, token, data=big, headers={"Content-Type": "application/json"}
        )
        refused(answer, 413, "too_large")
    # Under the limit, the same route answers on the merits.
    answer = await http_call(server, "POST", "/v1/envelopes/verify", json={"x": 1})
    refused(answer, 400, "bad_request")


async def test_refusals_carry_the_json_error_and_the_matching_status(server: Harness) -> None:
    _customer, _notary, sid = await assigned_session(server)
    customer = server.token("c1", "customer")
    refused(await http_call(server, "GET", f"/v1/sessions/{sid}"), 401, "unauthorized")
    refused(
        await http_call(server, "GET", f"/v1/sessions/{sid}", "not.a.token"), 401, "unauthorized"
    )
    refused(await http_call(server, "GET", "/v1/sessions", customer), 403, "forbidden")
    refused(
        await http_call(server, "GET", f"/v1/sessions/{sid}", server.token("c9", "customer")),
        404,
        "not_found",
    )
    refused(
        await http_call(server, "GET", "/v1/sessions?state=NOPE", server.token(ADMIN, "admin")),
        400,
        "bad_request",
    )
    refused(await http_call(server, "GET", "/v1/no/such/route"), 404, "not_found")


async def _audit(h: Harness, query: str) -> list[dict[str, Any]]:
    status, body = await http_call(h, "GET", f"/v1/audit?{query}", h.token(ADMIN, "admin"))
    assert status == 200, body
    entries: list[dict[str, Any]] = body["entries"]
    return entries


async def test_the_audit_export_honours_from_and_to(server: Harness) -> None:
    await online_notary(server, "n1")
    customer = await server.client("c-aud", "customer")
    for _ in range(6):
        await customer.call("notaries.available")
    every = await _audit(server, "user_id=c-aud&format=json")
    assert len(every) == 6, every
    times = sorted(e["at"] for e in every)
    pivot = times[3]
    ids = {e["correlation_id"] for e in every}

    after = await _audit(server, f"user_id=c-aud&from={pivot}")
    before = await _audit(server, f"user_id=c-aud&to={pivot}")
    # `from` is inclusive, `to` exclusive: the two halves split the whole.
    assert after and all(e["at"] >= pivot for e in after), (pivot, after)
    assert all(e["at"] < pivot for e in before), (pivot, before)
    halves = [e["correlation_id"] for e in after + before]
    assert sorted(halves) == sorted(ids)
    assert await _audit(server, f"user_id=c-aud&from={pivot}&to={pivot}") == []
    inside = await _audit(server, f"user_id=c-aud&from={times[0]}&to={pivot}")
    assert {e["correlation_id"] for e in inside} == {e["correlation_id"] for e in before}
    # Times with a zone, and without one (UTC).
    assert await _audit(server, "user_id=c-aud&from=2999-01-01T00:00:00Z") == []
    assert await _audit(server, "user_id=c-aud&to=2000-01-01T00:00:00") == []
    assert len(await _audit(server, "user_id=c-aud&from=2000-01-01T08:00:00%2B08:00")) == 6
    # The CSV export filters the same way.
    status, text = await http_call(
        server,
        "GET",
        f"/v1/audit?user_id=c-aud&from={pivot}&format=csv",
        server.token(ADMIN, "admin"),
    )
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["correlation_id"] for r in rows} == {e["correlation_id"] for e in after}


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "12:00"])
async def test_an_audit_range_that_is_no_time_is_refused(server: Harness, bad: str) -> None:
    refused(
        await http_call(server, "GET", f"/v1/audit?from={bad}", server.token(ADMIN, "admin")),
        400,
        "bad_request",
    )
    refused(
        await http_call(server, "GET", f"/v1/audit?to={bad}", server.token(ADMIN, "admin")),
        400,
        "bad_request",
    )

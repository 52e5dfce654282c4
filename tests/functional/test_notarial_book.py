"""The notarial book against the real server and Postgres (issue 4's
done-when): a notary's monthly book, as JSON and CSV, with a complete entry
and an incomplete (cancelled) one; nobody else's book, no bad month."""

from __future__ import annotations

import csv
import io

from persistence.book import TEN_FIELDS
from tests.conftest import Harness
from tests.flows import (
    ADDRESS,
    ID_NUMBER,
    NAME,
    accept_next_offer,
    doc,
    http_call,
    request_session,
)
from tests.functional.test_legal_record import notarized_session


async def test_the_book_has_complete_and_incomplete_entries(server: Harness) -> None:
    _, notary, sid = await notarized_session(server)
    # A second session, cancelled after the notary was assigned.
    customer2 = await server.client("c2", "customer")
    sid2 = await request_session(customer2, "k2", 8)
    await accept_next_offer(notary, customer2, timeout=20)
    await customer2.call("session.cancel", {"session_id": sid2, "reason": "customer unavailable"})

    month = (await customer2.call("session.join", {"session_id": sid2}))["session"]["created_at"][
        :7
    ]
    n1 = server.token("n1", "enp")
    book = "/v1/notaries/n1/book"
    status, body = await http_call(server, "GET", f"{book}?month={month}&format=json", n1)
    assert status == 200
    entries = body["entries"]
    status, text = await http_call(
        server, "GET", f"{book}?month={month}&format=csv", n1, content_type="text/csv"
    )
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    # Someone else's book, a bad month, an empty month.
    status, body = await http_call(server, "GET", book, server.token("n2", "enp"))
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert (await http_call(server, "GET", f"{book}?month=2026-13", n1))[0] == 400
    status, text = await http_call(
        server, "GET", f"{book}?month=2001-01&format=csv", server.token("root", "admin")
    )
    empty = list(csv.reader(io.StringIO(text)))
    assert "No entries" in empty[1][1]
    status, body = await http_call(server, "GET", f"{book}?month=2001-01", n1)
    assert body["statement"].startswith("No entries")

    assert [e["entry_no"] for e in entries] == [1, 2]
    complete, incomplete = entries
    assert complete["session_id"] == sid and complete["complete"] is True
    assert complete["principals"] == [{"name": NAME, "address": ADDRESS}]
    assert complete["competent_evidence_of_identity"]["id_number"] == ID_NUMBER
    assert complete["parties_in_philippines"] is True and complete["mode"] == "REN"
    assert complete["document_sha256"] == doc(7)["sha256"]
    assert complete["fee"]["amount"] is not None
    assert incomplete["session_id"] == sid2 and incomplete["complete"] is False
    assert incomplete["incomplete_reason"] == "customer unavailable"
    assert "Incomplete act" in incomplete["other_circumstances"]
    assert all(f in rows[0] for f in TEN_FIELDS) and len(rows) == 2
    assert NAME in rows[0]["principals"] and rows[1]["complete"] == "no"

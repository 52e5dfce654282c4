"""At the seal (issue 14), through the real server and Postgres: the signed
TRUTH envelope carries the principal's signature time and the seal time as
journaled, and the number of the act's notarial book entry; the book entry
holds the signature's SHA-256 and the same times; a finalisation run again
keeps the number it reserved the first time."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from pathlib import Path
from typing import Any

from enf_client import EnfClient

from persistence.book import reserve_entry_no
from persistence.pool import create_pool
from tests.conftest import Harness
from tests.flows import (
    accept_next_offer,
    distribute_to_completion,
    end_and_notarize,
    http_call,
    in_the_call,
    online_notary,
    request_session,
    run_to_notarized,
    sign_and_seal,
)
from tests.pgproxy import proxied_server

# What run_to_notarized has the customer send with act.sign.
SIGNATURE = "c2lnbmF0dXJl"


async def journaled(h: Harness, token: str, sid: str, name: str) -> dict[str, Any]:
    """The session's one journal event `name`, as GET /v1/sessions/{id}/journal gives it."""
    status, body = await http_call(h, "GET", f"/v1/sessions/{sid}/journal", token)
    assert status == 200, body
    [event] = [e for e in body["events"] if e["name"] == name]
    return dict(event)


async def envelope_of(h: Harness, token: str, sid: str) -> dict[str, Any]:
    """The signed envelope of the session, checked by the server's own verifier."""
    status, signed = await http_call(h, "GET", f"/v1/envelopes/ENF-{sid}", token)
    assert status == 200, signed
    verdict = await http_call(h, "POST", "/v1/envelopes/verify", json=signed)
    assert verdict == (200, {"valid": True})
    envelope: dict[str, Any] = signed["envelope"]
    return envelope


async def book_of(h: Harness, notary_id: str, month: str) -> tuple[list[Any], list[Any]]:
    """The notary's book for `month`: the JSON export's entries, the CSV's rows."""
    token = h.token(notary_id, "enp")
    path = f"/v1/notaries/{notary_id}/book?month={month}"
    status, body = await http_call(h, "GET", path + "&format=json", token)
    assert status == 200, body
    status, text = await http_call(h, "GET", path + "&format=csv", token, content_type="text/csv")
    assert status == 200, text
    return body["entries"], list(csv.DictReader(io.StringIO(text)))


async def cancelled_after_assignment(h: Harness, notary: EnfClient, user: str, n: int) -> str:
    """A session of `notary` cancelled after it accepted: an incomplete-act entry."""
    customer = await h.client(user, "customer")
    sid = await request_session(customer, f"cancel-{n}", n)
    await accept_next_offer(notary, customer)
    await customer.call("session.cancel", {"session_id": sid, "reason": "changed my mind"})
    await customer.expect("session.state", state="CANCELLED")
    return sid


async def test_the_envelope_and_the_book_agree_on_the_seal(server: Harness) -> None:
    notary = await online_notary(server, "n1")
    # An incomplete act first: the notarized one is the book's second entry.
    cancelled = await cancelled_after_assignment(server, notary, "c0", 1)
    customer = await server.client("c1", "customer")
    sid = await request_session(customer, "sealed", 2)
    await accept_next_offer(notary, customer)
    await run_to_notarized(customer, notary, sid)

    token = server.token("c1", "customer")
    signed_event = await journaled(server, token, sid, "act.signed")
    sealed_event = await journaled(server, token, sid, "act.sealed")
    assert signed_event["data"]["signature"] == SIGNATURE
    envelope = await envelope_of(server, token, sid)
    assert envelope["customer"]["signed_at"] == signed_event["at"]
    assert envelope["enp"]["sealed_at"] == sealed_event["at"]
    reference = envelope["compliance"]["notarial_book"]
    assert reference["notary_id"] == "n1" and reference["session_id"] == sid

    entries, rows = await book_of(server, "n1", envelope["timestamp"][:7])
    assert [(e["entry_no"], e["session_id"]) for e in entries] == [(1, cancelled), (2, sid)]
    [entry] = [e for e in entries if e["session_id"] == sid]
    assert reference["entry_no"] == entry["entry_no"] == 2
    digest = hashlib.sha256(SIGNATURE.encode()).hexdigest()
    assert entry["signature_sha256"] == digest
    assert entry["signed_at"] == signed_event["at"]
    assert entry["sealed_at"] == sealed_event["at"] == envelope["enp"]["sealed_at"]
    [row] = [r for r in rows if r["session_id"] == sid]
    assert row["entry_no"] == "2" and row["signature_sha256"] == digest
    assert (row["signed_at"], row["sealed_at"]) == (signed_event["at"], sealed_event["at"])
    # The incomplete act was never signed nor sealed: nothing to refer to.
    [incomplete] = [e for e in entries if e["session_id"] == cancelled]
    assert incomplete["signature_sha256"] is None and incomplete["sealed_at"] is None


async def test_a_finalisation_run_again_keeps_its_reserved_number(
    server: Harness, database: str
) -> None:
    notary = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")
    sid = await request_session(customer, "again", 3)
    await accept_next_offer(notary, customer)
    await in_the_call(customer, notary, sid)
    await sign_and_seal(customer, notary, sid, signature=SIGNATURE)
    # A first finalisation reserved the session's number (1), then the server
    # stopped before its commit; another act of the notary took the next one.
    pool = await create_pool(database, min_size=1, max_size=1)
    try:
        assert await reserve_entry_no(pool, "n1", sid) == 1
        assert await reserve_entry_no(pool, "n1", "another-session") == 2
    finally:
        await pool.close()
    notarized = await end_and_notarize(customer, notary, sid)
    assert notarized["data"]["envelope_id"] == f"ENF-{sid}"
    envelope = await envelope_of(server, server.token("c1", "customer"), sid)
    assert envelope["compliance"]["notarial_book"]["entry_no"] == 1
    entries, _ = await book_of(server, "n1", envelope["timestamp"][:7])
    assert [(e["entry_no"], e["session_id"]) for e in entries] == [(1, sid)]


async def test_a_reservation_whose_answer_is_lost_is_not_made_twice(
    database: str, tmp_path: Path
) -> None:
    """The reservation lands but its answer is cut on the way back: the
    finalisation meets an outage and runs again, and gets the number reserved
    the first time (the next act of the notary takes the next one: none skipped)."""
    settings: dict[str, Any] = {"recording": "off", "outbox": False}
    async with proxied_server(database, tmp_path, **settings) as (h, proxy):
        notary = await online_notary(h, "n1")
        customer = await h.client("c1", "customer")
        sid = await request_session(customer, "lost", 5)
        await accept_next_offer(notary, customer)
        await in_the_call(customer, notary, sid)
        await sign_and_seal(customer, notary, sid, signature=SIGNATURE)
        await notary.call("video.end", {"session_id": sid})
        # The reservation's answer: asyncpg's fetchval executes with a row
        # limit, so it ends with PortalSuspended ('s') then ReadyForQuery
        # ('Z'), once Sync has committed it. (Not b"SELECT 1": that tag came
        # from asyncpg's reset query after the answer, a cut too late.)
        cut = proxy.cut_when(
            b"notarial_book_reservations", everything=False, reply=b"s\x00\x00\x00\x04Z"
        )
        await notary.call("session.notarize", {"session_id": sid})
        assert b"notarial_book_reservations" in await asyncio.wait_for(cut, 10)
        await customer.expect("session.notarized")
        envelope = await envelope_of(h, h.token("c1", "customer"), sid)
        assert envelope["compliance"]["notarial_book"]["entry_no"] == 1
        await distribute_to_completion(customer, notary, sid)
        later = await cancelled_after_assignment(h, notary, "c2", 6)
        entries, _ = await book_of(h, "n1", envelope["timestamp"][:7])
        assert [(e["entry_no"], e["session_id"]) for e in entries] == [(1, sid), (2, later)]
    pool = await create_pool(database, min_size=1, max_size=1)
    try:  # the counter went up once per session
        assert await reserve_entry_no(pool, "n1", "the-next-act") == 3
    finally:
        await pool.close()

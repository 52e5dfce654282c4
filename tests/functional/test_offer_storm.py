"""Issue 19, the offer storm, made deterministic: the server's database goes
through a TCP proxy (tests/pgproxy.py) that cuts every connection at the
moment a chosen commit goes out.

1. The cut hits the accepting notary's own commit, after the session's
   assignment: the client's answer matches what was committed, the notary is
   busy with exactly that session, and no offer is ever made for a session
   that is no longer `REQUESTED` (the whole recorded history is checked by
   tests/chaos/checker.py) while another notary comes online and the session
   runs to completion.
2. The session refuses an offer (cancelled while the offer was open, the
   withdrawal cut away): the refusal is counted, and the session is never
   offered again.
3. The session's assignment commits but the connection drops before Postgres
   acknowledges it (the cut waits for the COMMIT's answer): the answer must
   still match what was committed: the journal writer finds out what became
   of a commit whose acknowledgement it lost (persistence/in_doubt.py).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from enf_client import EnfClient

from actors import lifecycle as L
from tests.chaos.checker import Journal, check, load_journal, offers_made
from tests.chaos.history import History, RecordingClient, recording_client
from tests.conftest import Harness
from tests.flows import get_json, put_notary, request_session, run_video_to_completion
from tests.functional.test_ops import scrape, value
from tests.pgproxy import proxied_server

REFUSED = "enf_offers_refused_by_session_total"
# No outbox: the delivery worker is not under test here, and a cut in the
# middle of a delivery makes it log an ERROR (which the server net fails on).
SETTINGS: dict[str, Any] = {"outbox": False}


async def online(h: Harness, history: History, notary_id: str) -> RecordingClient:
    await put_notary(h, notary_id)
    n = await recording_client(h, history, notary_id, "enp")
    assert (await n.call("presence.online"))["status"] == "available"
    return n


async def offered_to_n1(
    h: Harness, history: History
) -> tuple[RecordingClient, RecordingClient, str, str]:
    """Notary n1 online, customer c1 requests: (n1, c1, session id, n1's offer id)."""
    n1 = await online(h, history, "n1")
    c1 = await recording_client(h, history, "c1", "customer")
    sid = await request_session(c1)
    # Once c1 has the session's first event, its connection reads no more of
    # the journal (a read cut away would close it: 1013, resume with since_seq).
    await c1.expect("session.state", state=L.REQUESTED)
    oid = (await n1.expect("offer", session_id=sid))["data"]["offer_id"]
    return n1, c1, sid, oid


async def answer_matches(
    n1: RecordingClient, rid: str, reply: dict[str, Any], database: str, sid: str, oid: str
) -> None:
    """n1's answer to its accept `rid` matches what was committed: ok and
    assigned, or `unavailable` and nothing assigned (then the retry by id
    takes it); a retry by id is answered the same."""
    assigned = [
        (r.data["enp_id"], r.data["offer_id"])
        for r in (await load_journal(database)).states()[sid]
        if r.data["state"] == L.ENP_ASSIGNED
    ]
    if reply["ok"]:
        assert reply["data"]["session_id"] == sid
        assert assigned == [("n1", oid)], assigned
    else:
        assert reply["error"]["code"] == "unavailable" and assigned == [], (reply, assigned)
        reply = await n1.request("offer.accept", {"offer_id": oid}, id=rid)
        assert reply["ok"] and reply["data"]["session_id"] == sid, reply
    again = await n1.request("offer.accept", {"offer_id": oid}, id=rid)
    assert again["ok"] and again["data"] == reply["data"], again


async def offered(notaries: list[RecordingClient], sid: str) -> tuple[RecordingClient, str]:
    """The notary that gets the next offer of `sid`, and the offer's id."""
    waits = {
        asyncio.create_task(n.expect("offer", session_id=sid, timeout=15)): n for n in notaries
    }
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    first = done.pop()
    return waits[first], first.result()["data"]["offer_id"]


async def presence_of(watcher: EnfClient, notary_id: str, status: str) -> None:
    """Wait until `watcher` (subscribed to presence) hears `notary_id` is `status`."""
    await watcher.expect("notary.presence", notary_id=notary_id, status=status)


async def fetch(database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def held(database: str, notary_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The sessions `notary_id` is busy with, and its offers' (id, state)."""
    active = await fetch(
        database,
        "SELECT session_id FROM sessions WHERE enp_id = $1 AND NOT state = ANY($2)",
        notary_id,
        list(L.RELEASES_NOTARY),
    )
    offers = await fetch(
        database,
        "SELECT offer_id, state FROM offers WHERE notary_id = $1 ORDER BY created_at",
        notary_id,
    )
    return [r["session_id"] for r in active], [(r["offer_id"], r["state"]) for r in offers]


def offers_of(history: History, journal: Journal, sid: str) -> set[str]:
    return {
        o.offer_id for o in offers_made(history.records, journal).values() if o.session_id == sid
    }


async def assert_clean(h: Harness, history: History, database: str, refused: float) -> Journal:
    """The checker finds nothing in the run, and the refusal counter is `refused`."""
    journal = await load_journal(database)
    violations = check(history.records, journal)
    assert not violations, "\n".join(map(str, violations))
    assert value(await scrape(h), REFUSED) == refused
    return journal


async def test_cut_in_the_middle_of_an_accept(database: str, tmp_path: Path) -> None:
    async with proxied_server(database, tmp_path, offer_timeout_s=5, **SETTINGS) as (h, proxy):
        history = History()
        watcher = await recording_client(h, history, "admin-1", "admin")
        await watcher.call("presence.subscribe")
        n1, c1, sid, oid = await offered_to_n1(h, history)

        # The request id is stored (idempotency) by the notary's own commit only.
        rid = f"accept-{uuid.uuid4()}"
        cut = proxy.cut_when(rid.encode())
        reply = await n1.request("offer.accept", {"offer_id": oid}, id=rid, timeout=30)
        matched = await asyncio.wait_for(cut, 10)
        assert proxy.stats.cuts == 1 and proxy.stats.dropped >= 1
        assert b"ENP_ASSIGNED" not in matched, "the cut hit the session's assignment"

        await answer_matches(n1, rid, reply, database, sid, oid)
        # The marker is the notary's own record (written by a retry, if at all),
        # never the session's.
        recorded = await fetch(
            database, "SELECT actor_id FROM idempotency WHERE request_id = $1", rid
        )
        assert {r["actor_id"] for r in recorded} <= {"notary:n1"}, recorded

        # The notary is busy with exactly that session.
        status, snapshot = await get_json(h, f"/v1/sessions/{sid}", h.token("c1", "customer"))
        assert status == 200 and (snapshot["state"], snapshot["enp_id"]) == (L.ENP_ASSIGNED, "n1")
        assert await held(database, "n1") == ([sid], [(oid, "accepted")])
        listed = (await c1.call("notaries.available"))["notaries"]
        assert [n["notary_id"] for n in listed] == []
        listing = (await watcher.call("presence.subscribe"))["notaries"]
        assert {"notary_id": "n1", "status": "busy"} in listing, listing
        watcher.drop_inbox()  # from here on, presence events tell what changed since

        # A second notary comes online; the session runs to its end; n1 is free again.
        n2 = await online(h, history, "n2")
        await run_video_to_completion(c1, n1, sid)
        await presence_of(watcher, "n1", "available")
        assert await held(database, "n1") == ([], [(oid, "accepted")])

        # A second customer is served by one of them: offers go on normally.
        c2 = await recording_client(h, history, "c2", "customer")
        sid2 = await request_session(c2, key="k2", n=2)
        taker, oid2 = await offered([n1, n2], sid2)
        assert (await taker.call("offer.accept", {"offer_id": oid2}))["session_id"] == sid2
        await c2.expect("session.state", state=L.ENP_ASSIGNED)

        journal = await assert_clean(h, history, database, refused=0)
        assert offers_of(history, journal, sid) == {oid}


async def test_a_refused_offer_is_never_made_again(database: str, tmp_path: Path) -> None:
    async with proxied_server(database, tmp_path, **SETTINGS) as (h, proxy):
        history = History()
        n1, c1, sid, oid = await offered_to_n1(h, history)

        # The customer cancels; the notary's withdrawal of the offer is cut away
        # (twice: the journal writer tries once more when it knows the first
        # try did not land), so the notary still holds the offer of a session
        # that no longer waits.
        cut = proxy.cut_when(oid.encode(), everything=False, times=2)
        await c1.call("session.cancel", {"session_id": sid, "reason": "changed my mind"})
        matched = await asyncio.wait_for(cut, 10)
        assert b"session_closed" in matched, "the cut hit something else than the withdrawal"
        refusal = await n1.request("offer.accept", {"offer_id": oid})
        assert not refusal["ok"], refusal
        error: dict[str, Any] = refusal["error"]
        assert error["code"] == "conflict" and "no longer waiting" in error["message"], error

        # More notaries and another customer: offers go on, never for the refused session.
        n2 = await online(h, history, "n2")
        c2 = await recording_client(h, history, "c2", "customer")
        sid2 = await request_session(c2, key="k2", n=2)
        taker, oid2 = await offered([n1, n2], sid2)
        assert (await taker.call("offer.accept", {"offer_id": oid2}))["session_id"] == sid2
        await c2.expect("session.state", state=L.ENP_ASSIGNED)

        status, snapshot = await get_json(h, f"/v1/sessions/{sid}", h.token("c1", "customer"))
        assert status == 200 and snapshot["state"] == L.CANCELLED
        journal = await assert_clean(h, history, database, refused=1)
        assert offers_of(history, journal, sid) == {oid}
        assert (await held(database, "n1"))[1][0] == (oid, "withdrawn")


async def test_assignment_committed_but_not_acknowledged(database: str, tmp_path: Path) -> None:
    """The session's assignment commits, but the connection drops before the
    server hears so: the answer must still match what was committed."""
    async with proxied_server(database, tmp_path, **SETTINGS) as (h, proxy):
        history = History()
        n1, c1, sid, oid = await offered_to_n1(h, history)
        # The offer id goes out first with the session's assignment (one
        # statement, its own transaction); the cut comes when Postgres answers
        # it, committed.
        cut = proxy.cut_when(oid.encode(), reply=b"SELECT 1")
        rid = f"accept-{uuid.uuid4()}"
        reply = await n1.request("offer.accept", {"offer_id": oid}, id=rid, timeout=30)
        matched = await asyncio.wait_for(cut, 10)
        assert b"ENP_ASSIGNED" in matched, "the cut hit something else than the assignment"
        await answer_matches(n1, rid, reply, database, sid, oid)
        await c1.expect("session.state", state=L.ENP_ASSIGNED)
        assert await held(database, "n1") == ([sid], [(oid, "accepted")])
        await assert_clean(h, history, database, refused=0)

"""After the database's connections are cut (issue 13, items 3, 4 and 10),
through the TCP proxy of tests/pgproxy.py:

- a message between actors that meets the outage runs again once the
  database answers, in order: the matchmaker's `enqueue` whose read of the
  customer's favourites was cut still ends in an offer;
- the journal writers take new connections: the first requests after a cut
  are answered `ok` (before, each writer failed one batch on the connection
  asyncpg had taken back: "connection has been released back to the pool");
- a commit cut before it reached Postgres is known not to have landed and is
  made once more, so the client hears `ok` once and the journal holds it once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from actors import lifecycle as L
from tests.chaos.checker import load_journal
from tests.flows import (
    accept_next_offer,
    in_the_call,
    online_notary,
    request_session,
    sign_and_seal,
)
from tests.pgproxy import proxied_server

SETTINGS: dict[str, Any] = {"outbox": False, "journal_writers": 2}


async def test_an_enqueue_cut_away_from_the_database_still_ends_in_an_offer(
    database: str, tmp_path: Path
) -> None:
    async with proxied_server(database, tmp_path, **SETTINGS) as (h, proxy):
        n1 = await online_notary(h, "n1")
        # The matchmaker reads the customer's favourites when the session is
        # enqueued: that read's connection is cut.
        cut = proxy.cut_when(b"FROM favorites", everything=False)
        c1 = await h.client("c1", "customer")
        sid = await request_session(c1)
        assert b"favorites" in await asyncio.wait_for(cut, 10)
        offer = await n1.expect("offer", session_id=sid)
        assert offer["data"]["session_id"] == sid


async def test_the_first_requests_after_a_cut_are_answered_ok(
    database: str, tmp_path: Path
) -> None:
    async with proxied_server(database, tmp_path, **SETTINGS) as (h, proxy):
        c1 = await h.client("c1", "customer")
        # Four sessions: both journal writers have committed on their connection.
        sids = [await request_session(c1, key=f"k{i}", n=i) for i in range(1, 5)]
        assert proxy.cut_all() >= 2
        for sid in sids:
            reply = await c1.request("session.cancel", {"session_id": sid, "reason": "test"})
            assert reply["ok"], reply
        journal = await load_journal(database)
        for sid in sids:
            assert [r.data["state"] for r in journal.states()[sid]] == [
                L.REQUESTED,
                L.CANCELLED,
            ]


async def test_a_commit_cut_on_its_way_is_made_once_more_and_once_only(
    database: str, tmp_path: Path
) -> None:
    async with proxied_server(database, tmp_path, **SETTINGS) as (h, proxy):
        c1 = await h.client("c1", "customer")
        sid = await request_session(c1)
        await c1.expect("session.state", state=L.REQUESTED)
        # The cancel's commit is cut before Postgres sees it (the marker is in it).
        cut = proxy.cut_when(b"cut-on-its-way", everything=False)
        reply = await c1.request("session.cancel", {"session_id": sid, "reason": "cut-on-its-way"})
        await asyncio.wait_for(cut, 10)
        assert reply["ok"], reply
        await c1.expect("session.state", state=L.CANCELLED)
        journal = await load_journal(database)
        assert [r.data["state"] for r in journal.states()[sid]] == [L.REQUESTED, L.CANCELLED]


async def test_a_finalisation_that_meets_an_outage_runs_again_until_it_lands(
    database: str, tmp_path: Path
) -> None:
    """`session.notarize` answered ok promises `NOTARIZED`: the timer-driven
    finalisation whose commit is cut (twice: the writer's own second try too)
    runs again once the database answers."""
    async with proxied_server(database, tmp_path, recording="off", **SETTINGS) as (h, proxy):
        n1 = await online_notary(h, "n1")
        c1 = await h.client("c1", "customer")
        sid = await request_session(c1)
        await accept_next_offer(n1, c1)
        await in_the_call(c1, n1, sid)
        await sign_and_seal(c1, n1, sid)
        await n1.call("video.end", {"session_id": sid})
        cut = proxy.cut_when(b"session.notarized", everything=False, times=2)
        await n1.call("session.notarize", {"session_id": sid})
        assert b"session.notarized" in await asyncio.wait_for(cut, 10)
        notarized = await c1.expect("session.notarized")
        assert notarized["data"]["envelope_id"]
        journal = await load_journal(database)
        states = [r.data["state"] for r in journal.states()[sid]]
        assert states[-2:] == [L.NOTARIZING, L.NOTARIZED], states

"""Issue 13, class 5: a connection never receives the same `(topic, seq)`
twice, whatever it sends (PROTOCOL §3): a repeated `session.request`, a
re-join, a repeated `presence.online`. Its stream per topic stays gapless.

Each test ends with an event caused after the repeats and waits for it:
what a repeat would have sent again comes before it on the same socket.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from enf_client import EnfClient

from tests.conftest import Harness
from tests.flows import (
    assert_gapless,
    assigned_session,
    doc,
    online_notary,
    request_session,
    session_events,
)


def assert_once_each(c: EnfClient) -> None:
    """No `(topic, seq)` twice on this connection, and each topic gapless."""
    durable = [(e["topic"], e["seq"]) for e in c.events if e.get("seq") is not None]
    twice = [key for key, n in Counter(durable).items() if n > 1]
    assert not twice, f"sent twice: {twice}"
    for topic in {t for t, _ in durable}:
        seqs = [s for t, s in durable if t == topic]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (topic, seqs)


async def _cancel(c: EnfClient, sid: str) -> dict[str, Any]:
    await c.call("session.cancel", {"session_id": sid, "reason": "done"})
    return await c.expect("session.state", state="CANCELLED")


async def test_repeated_request_on_the_same_connection(server: Harness) -> None:
    customer = await server.client("c1", "customer")
    sid = await request_session(customer)
    await customer.expect("session.state", state="REQUESTED")
    again = await customer.call("session.request", {"idempotency_key": "k", "document": doc()})
    assert again == {"session_id": sid, "state": "REQUESTED"}
    # A retry with the very same request id (a lost reply) is answered the same.
    first_id = customer.sent[0]["id"]
    retry = await customer.request(
        "session.request", {"idempotency_key": "k", "document": doc()}, id=first_id
    )
    assert retry["ok"] and retry["data"]["session_id"] == sid
    cancelled = await _cancel(customer, sid)
    events = session_events(customer, sid)
    assert_gapless(events)
    assert events[-1] is cancelled and [e["seq"] for e in events] == [1, 2]
    assert_once_each(customer)


async def test_join_then_repeated_request(server: Harness) -> None:
    first = await server.client("c1", "customer")
    sid = await request_session(first)
    # The customer's app comes back on a second socket: re-joins from the
    # start, then repeats the request it is not sure went through.
    back = await server.client("c1", "customer")
    await back.call("session.join", {"session_id": sid, "since_seq": 0})
    await back.expect("session.state", state="REQUESTED")
    again = await back.call("session.request", {"idempotency_key": "k", "document": doc()})
    assert again["session_id"] == sid
    await back.call("session.join", {"session_id": sid, "since_seq": 0})
    await _cancel(back, sid)
    events = session_events(back, sid)
    assert_gapless(events)
    assert [e["data"].get("state") for e in events if e["name"] == "session.state"] == [
        "REQUESTED",
        "CANCELLED",
    ]
    assert_once_each(back)
    assert_once_each(first)


async def test_rejoins_never_go_back(server: Harness) -> None:
    customer, notary, sid = await assigned_session(server)
    head = (await notary.call("session.join", {"session_id": sid, "since_seq": 0}))["session"][
        "seq"
    ]
    # Joined from the start after following from the acceptance on: what it
    # was sent is not sent again, and nothing older comes after newer.
    for since in (0, 1, None, 0):
        data: dict[str, Any] = {"session_id": sid}
        if since is not None:
            data["since_seq"] = since
        await notary.call("session.join", data)
        await customer.call("session.join", data)
    await _cancel(customer, sid)
    await notary.expect("session.state", state="CANCELLED")
    assert session_events(notary, sid)[-1]["seq"] > head
    assert_once_each(notary)
    assert_once_each(customer)
    assert_gapless(session_events(customer, sid))


async def test_repeated_presence_online(server: Harness) -> None:
    notary = await online_notary(server, "n1")
    customer = await server.client("c1", "customer")
    sid = await request_session(customer)
    offer = await notary.expect("offer", session_id=sid)
    for _ in range(3):
        await notary.call("presence.online", {"since_seq": 0})
    await notary.call("offer.decline", {"offer_id": offer["data"]["offer_id"]})
    await _cancel(customer, sid)
    await notary.call("presence.online", {"since_seq": 0})
    # Asked of the same actor, so answered after the repeat is done with.
    await notary.call("presence.set", {"status": "available"})
    assert [e["seq"] for e in notary.events if e.get("name") == "offer"] == [offer["seq"]]
    assert_once_each(notary)

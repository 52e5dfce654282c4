"""The Python client package (clients/python, `enf_client.ResilientClient`)
against the real server: a whole notarization with its sockets dropped at
every step, resumed with nothing lost or doubled; duplicates dropped by
(topic, seq); a request retried by id after a drop applied once; a token
refreshed before it expires."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from enf_client import ResilientClient, token_expiry

from tests.conftest import Harness
from tests.flows import ADMIN, HAPPY_STATES, PH, doc, passed_checks, put_notary


def client(server: Harness, sub: str, role: str, **kw: Any) -> ResilientClient:
    async def token() -> str:
        return server.token(sub, role)

    return ResilientClient(server.ws_url, token, backoff_base_s=0.05, **kw)


def durable(c: ResilientClient, sid: str) -> list[int]:
    return [e["seq"] for e in c.events if e.get("topic") == f"session:{sid}" and "seq" in e]


async def dropped(c: ResilientClient) -> None:
    """Drop `c`'s socket and wait until it is connected and resumed again."""
    before = c.connects
    await c.drop()
    await c.call("ping")  # answered on the next socket, after the resume
    assert c.connects == before + 1


async def test_a_whole_notarization_with_every_step_dropped(server: Harness) -> None:
    await put_notary(server, "n1")
    customer = client(server, "c1", "customer")
    notary = client(server, "n1", "enp", codec="msgpack")
    async with customer, notary:
        await notary.call("presence.online")
        reply = await customer.call("session.request", {"document": doc()})  # key added
        sid = reply["session_id"]
        await dropped(notary)  # still online after the resume: the offer comes
        offer = await notary.expect("offer")
        await dropped(customer)
        await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
        await customer.expect("session.state", state="ENP_ASSIGNED")
        consent = {"recording": True, "privacy": True}
        await customer.call("session.join", {"session_id": sid, "consent": consent, "location": PH})
        await notary.call("session.join", {"session_id": sid, "location": PH})
        await dropped(notary)
        await notary.call("video.start", {"session_id": sid})
        await customer.expect("session.state", state="VIDEO_IN_PROGRESS")
        await dropped(customer)
        await notary.call("checks.record", passed_checks(sid))
        await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
        await dropped(notary)
        await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
        await notary.call("video.end", {"session_id": sid})
        await dropped(customer)
        await notary.call("session.notarize", {"session_id": sid})
        await customer.expect("session.notarized")
        await customer.call("session.distribute", {"session_id": sid, "recipients": []})
        await customer.expect("session.state", state="COMPLETED")
        await notary.expect("session.state", state="COMPLETED")

        for c, first in ((customer, 1), (notary, None)):
            seqs = durable(c, sid)
            start = seqs[0] if first is None else first
            assert seqs == list(range(start, start + len(seqs))), seqs  # no gap, no repeat
        states = [
            e["data"]["state"]
            for e in customer.events
            if e.get("name") == "session.state" and e.get("topic") == f"session:{sid}"
        ]
        assert states == HAPPY_STATES
        assert customer.connects == 4 and notary.connects == 4, (customer.connects, notary.connects)
        assert sid not in customer.sessions  # COMPLETED: not followed any more

        # On a new socket, a re-join from the start replays every event (the
        # server knows only what it sent on this socket): each one dropped.
        await dropped(customer)
        before = list(customer.events)
        await customer.call("session.join", {"session_id": sid, "since_seq": 0})
        replayed = len(durable(customer, sid))
        await customer.until(lambda: customer.duplicates_dropped == replayed)
        await customer.call("ping")
        assert customer.events == before and customer.duplicates_dropped == replayed


async def test_a_request_in_flight_when_the_socket_drops_is_applied_once(
    server: Harness,
) -> None:
    async with client(server, "c1", "customer") as customer:
        key = {"idempotency_key": "once", "document": doc()}
        reply, _ = await asyncio.gather(customer.call("session.request", key), customer.drop())
        sid = reply["session_id"]
        await customer.expect("session.state", state="REQUESTED")
        # Applied once: one REQUESTED (then a participant.joined if the reply
        # came before the drop and the resume re-joined). The same key gives
        # the same session.
        again = await customer.call("session.request", key)
        assert again["session_id"] == sid
        names = [e["name"] for e in customer.events if e.get("topic") == f"session:{sid}"]
        assert names in (["session.state"], ["session.state", "participant.joined"]), names
        assert durable(customer, sid) == list(range(1, len(names) + 1))


async def test_the_token_is_refreshed_before_it_expires(server: Harness) -> None:
    tokens: list[str] = []
    fourth = asyncio.Event()

    async def token() -> str:
        tokens.append(server.token("c1", "customer", ttl_s=3))
        if len(tokens) >= 4:
            fourth.set()
        return tokens[-1]

    async with ResilientClient(server.ws_url, token, refresh_margin_s=2.0) as c:
        sid = (await c.call("session.request", {"document": doc()}))["session_id"]
        await asyncio.wait_for(fourth.wait(), 20)  # one token a second
        first_exp = token_expiry(tokens[0])
        assert first_exp is not None and time.time() >= first_exp  # the first one has expired
        reply = await c.call("session.join", {"session_id": sid})
        assert reply["session"]["state"] == "REQUESTED"
        assert 4401 not in c.close_codes  # it left each socket before its token expired
        assert len(c.close_codes) == c.connects - 1 >= 3
        assert durable(c, sid) == [1, 2]  # REQUESTED, then the first re-join's participant.joined


async def test_a_resume_keeps_the_notary_away_and_the_subscription(server: Harness) -> None:
    await put_notary(server, "n1")
    async with client(server, "n1", "enp") as notary, client(server, ADMIN, "admin") as admin:
        await notary.call("presence.online")
        await notary.call("presence.set", {"status": "away"})
        listed = await admin.call("presence.subscribe")
        assert {"notary_id": "n1", "status": "away"} in listed["notaries"]
        await dropped(notary)
        await dropped(admin)
        # Still away after the re-online (which alone would make it available),
        # and the admin's subscription was sent again on its new socket.
        fresh = await admin.call("presence.subscribe")
        assert {"notary_id": "n1", "status": "away"} in fresh["notaries"], fresh
        await notary.call("presence.set", {"status": "available"})
        await admin.expect("notary.presence", notary_id="n1", status="available")


async def test_a_join_without_since_seq_resumes_from_its_snapshot(server: Harness) -> None:
    async with client(server, "c1", "customer") as customer:
        sid = (await customer.call("session.request", {"document": doc()}))["session_id"]
        await customer.expect("session.state", state="REQUESTED")
    async with client(server, ADMIN, "admin") as admin:
        snapshot = (await admin.call("session.join", {"session_id": sid}))["session"]
        assert admin.last_seq[f"session:{sid}"] == snapshot["seq"] >= 1
        await dropped(admin)
        # The resume asked for what came after the snapshot: no history replayed.
        assert durable(admin, sid) == [] and admin.duplicates_dropped == 0


async def test_a_provider_with_nothing_fresher_does_not_loop(server: Harness) -> None:
    token = server.token("c1", "customer", ttl_s=2)

    async def same() -> str:
        return token

    async with ResilientClient(server.ws_url, same, refresh_margin_s=30.0) as c:
        # The refresh finds no later exp: the socket stays until the server's 4401.
        await c.until(lambda: 4401 in c.close_codes, timeout=10)
        assert c.close_codes[0] == 4401  # not 1000: the client did not leave it
        assert c.close_codes.count(4401) == 1

"""SMS through Twilio's own client against a local stand-in of its Messages
API (test_deliveries.py's `MessagesStandIn`), with real Postgres: the
distribution to SMS and webhook recipients, SMS waiting with a reason when
Twilio is not configured, bad recipients refused, and notifications with an
SMS offer to a notary who is away."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from tests.conftest import Harness, MakeServer
from tests.flows import (
    assigned_session,
    eventually,
    http_call,
    put_notary,
    request_session,
    run_to_notarized,
)
from tests.functional.test_deliveries import (
    MessagesStandIn,
    Receiver,
    fast_retries,
    notarized_for_distribution,
    outbox_rows,
)


async def test_sms_distribution_through_twilio(
    make_server: MakeServer, messages_api: MessagesStandIn
) -> None:
    async with Receiver() as rx:
        h, customer, sid = await notarized_for_distribution(make_server, messages_api, rx)
        await customer.call(
            "session.distribute",
            {
                "session_id": sid,
                "recipients": [
                    {"channel": "sms", "to": "+639171234567"},
                    {"channel": "sms", "to": "+639170000000"},  # refused by Twilio
                    {"channel": "webhook", "to": "records-office"},
                ],
            },
        )
        completed = await customer.expect("session.state", state="COMPLETED", timeout=30)
        statuses = {
            e["data"]["recipient"]: e["data"]
            for e in customer.events
            if e.get("name") == "delivery.status"
        }
        await rx.wait_for(lambda: any(e["type"] == "document.distributed" for e in rx.accepted))
    assert completed["data"]["by"] == "system"
    assert statuses[0]["status"] == "delivered" and statuses[2]["status"] == "delivered"
    assert statuses[1]["status"] == "dead_letter"
    assert statuses[1]["reason"] == "Twilio 400"  # Twilio's own text stays out of the journal
    assert statuses[0]["to"] == "+63*******567"  # only a hint in the event
    [sms] = messages_api.messages
    assert sms["To"] == "+639171234567" and sms["From"] == "+15005550006"
    link = sms["Body"].split(": ", 1)[1]
    status, signed = await http_call(h, "GET", link)
    assert status == 200 and signed["envelope"]["session_id"] == sid
    assert await http_call(h, "POST", "/v1/envelopes/verify", json=signed) == (200, {"valid": True})
    assert (await http_call(h, "GET", link.replace("sig=", "sig=0")))[0] == 403
    distributed = next(e for e in rx.accepted if e["type"] == "document.distributed")
    assert distributed["data"]["to"] == "records-office"


async def test_sms_waits_with_a_reason_without_twilio(
    make_server: MakeServer, database: str
) -> None:
    for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER"):
        assert not os.environ.get(k)
    h = await make_server()
    customer, notary, sid = await assigned_session(h)
    await run_to_notarized(customer, notary, sid)
    await customer.call(
        "session.distribute",
        {"session_id": sid, "recipients": [{"channel": "sms", "to": "+639171234567"}]},
    )
    r = await customer.request(
        "session.distribute", {"session_id": sid, "recipients": [{"channel": "fax", "to": "1"}]}
    )
    assert r["error"]["code"] == "bad_request"
    async with asyncio.timeout(10):
        while True:
            rows = [r for r in await outbox_rows(database, sid) if r["type"] == "sms"]
            if rows and rows[0]["last_error"]:
                break
            await asyncio.sleep(0.1)
    assert rows[0]["status"] == "pending" and "SMS not configured" in rows[0]["last_error"]
    assert rows[0]["attempts"] == 0


async def test_bad_recipients_are_refused(server: Harness) -> None:
    customer, _, sid = await assigned_session(server)
    for recipients in (
        [{"channel": "sms", "to": "0917-123"}],
        [{"channel": "pigeon", "to": "x"}],
    ):
        r = await customer.request(
            "session.distribute", {"session_id": sid, "recipients": recipients}
        )
        assert r["error"]["code"] == "bad_request", r


async def test_notifications_and_an_sms_offer_to_a_notary_who_is_away(
    make_server: MakeServer, messages_api: MessagesStandIn, database: str
) -> None:
    h = await make_server(
        twilio_api_base=str(messages_api.server.make_url("/")),
        reconnect_grace_s=30,
        **fast_retries(),
    )
    await put_notary(h, "n1", notify_sms="+639175550123")
    n = await h.client("n1", "enp")
    await n.call("presence.online")
    await n.close()  # away, but within its reconnect grace: still offered
    customer = await h.client("c1", "customer")
    sid = await request_session(customer)
    await eventually(lambda: bool(messages_api.messages), 20)
    [sms] = messages_api.messages
    assert sms["To"] == "+639175550123" and "New notarization request" in sms["Body"]
    # Back in time: the offer is there, accepting it notifies the customer.
    n = await h.client("n1", "enp")
    await n.call("presence.online", {"since_seq": 0})
    offer = await n.expect("offer")
    await n.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    note = await customer.expect("notification", kind="enp_assigned")
    assert note["data"]["session_id"] == sid and "seq" not in note
    await customer.call("session.cancel", {"session_id": sid, "reason": "test"})
    await customer.expect("notification", kind="request_cancelled")
    # The phone number is sealed at rest.
    conn = await asyncpg.connect(database)
    try:
        dump = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM notaries t")
        dump += await conn.fetchval("SELECT string_agg(t::text, ' ') FROM outbox t")
    finally:
        await conn.close()
    assert "9175550123" not in dump and "pii:v1:" in dump

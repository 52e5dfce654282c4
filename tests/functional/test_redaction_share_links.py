"""An envelope share link is a bearer credential: it reaches its recipients
(the SMS through Twilio, the `document.distributed` webhook) exactly as
signed, and it sits nowhere else in plain text: not in the outbox rows that
wait to send it, not in what admins read of them (`/v1/deliveries`)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg

from core.links import withhold_signatures
from tests.conftest import MakeServer
from tests.flows import bearer
from tests.functional.test_deliveries import (
    MessagesStandIn,
    Receiver,
    notarized_for_distribution,
)


async def outbox_dump(database: str) -> list[str]:
    """Every outbox row, whole, as text."""
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT t::text AS row FROM outbox t ORDER BY n")
    finally:
        await conn.close()
    return [r["row"] for r in rows]


async def test_the_share_link_reaches_recipients_but_stays_out_of_the_outbox(
    make_server: MakeServer, messages_api: MessagesStandIn, database: str
) -> None:
    async with Receiver() as rx:
        h, customer, sid = await notarized_for_distribution(make_server, messages_api, rx)
        recipients = [
            {"channel": "sms", "to": "+639171234567"},
            {"channel": "webhook", "to": "records-office"},
        ]
        await customer.call("session.distribute", {"session_id": sid, "recipients": recipients})
        await customer.expect("session.state", state="COMPLETED", timeout=30)
        await rx.wait_for(lambda: any(e["type"] == "document.distributed" for e in rx.accepted))
    [sms] = messages_api.messages
    envelope_id = f"ENF-{sid}"
    prefix = f"Your notarized document {envelope_id} is ready: "
    assert sms["Body"].startswith(prefix)  # the text recipients always got
    link = sms["Body"].removeprefix(prefix)
    sig = parse_qs(urlsplit(link).query)["sig"][0]
    assert len(sig) == 64
    distributed = next(e for e in rx.accepted if e["type"] == "document.distributed")
    assert distributed["data"]["link"] == link  # the webhook carries the same link
    async with aiohttp.ClientSession() as s:
        r = await s.get(link)
        assert r.status == 200 and (await r.json())["envelope"]["session_id"] == sid

        # Admins see the deliveries, not the link.
        admin = bearer(h.token("ops", "admin"))
        r = await s.get(h.url(f"/v1/deliveries?session_id={sid}"), headers=admin)
        listed = await r.text()
        ids = [d["id"] for d in json.loads(listed)["deliveries"]]
        shown = [listed]
        for delivery_id in ids:
            r = await s.get(h.url(f"/v1/deliveries/{delivery_id}"), headers=admin)
            assert r.status == 200
            shown.append(await r.text())
    rows = await outbox_dump(database)
    assert len(ids) == len(rows) and any(envelope_id in row for row in rows)
    for text in rows + shown:
        assert sig not in text and link not in text
    # What the outbox keeps: the message with its link withheld (the path and
    # expiry, and a digest of the signature that opens nothing).
    [sms_row] = [json.loads(d)["payload"] for d in shown[1:] if json.loads(d)["type"] == "sms"]
    assert sms_row["body"] == withhold_signatures(sms["Body"]) != sms["Body"]
    assert "&sig_sha256=" in sms_row["body"]

    # A row written before links were withheld does not show its link either.
    conn = await asyncpg.connect(database)
    try:
        sms_id = await conn.fetchval(
            "UPDATE outbox SET payload = jsonb_set(payload, '{body}', to_jsonb($1::text))"
            " WHERE type = 'sms' RETURNING id",
            sms["Body"],
        )
    finally:
        await conn.close()
    async with aiohttp.ClientSession() as s:
        r = await s.get(h.url(f"/v1/deliveries/{sms_id}"), headers=admin)
        old = await r.json()
    assert sig not in json.dumps(old) and old["payload"]["body"] == sms_row["body"]

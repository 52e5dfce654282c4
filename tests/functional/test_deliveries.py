"""Deliveries with real HTTP receivers on loopback and real Postgres: the
outbox, signed webhooks, retries, dead letters and replay, a crash between
commit and delivery, payment events, SMS through Twilio's own client against
a local stand-in, and a dead receiver that does not slow sessions down."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Harness, MakeServer
from tests.flows import (
    accept_next_offer,
    assigned_session,
    eventually,
    http_call,
    put_notary,
    request_session,
    run_to_notarized,
    run_video_to_completion,
)
from tests.server_process import ServerProcess, server_env

SECRET = "webhook-secret-for-tests-0123456789"


class Receiver:
    """A webhook receiver that verifies signatures and can be told to fail."""

    def __init__(self, behaviour: Callable[[int], Any] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.behaviour = behaviour or (lambda n: 200)
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = len(self.requests)
        self.requests.append({"headers": dict(request.headers), "body": body})
        todo = self.behaviour(n)
        if isinstance(todo, float):  # seconds to stall
            await asyncio.sleep(todo)
            todo = 200
        if todo == 200:
            self.accepted.append(json.loads(body))
            self.arrived.set()
        return web.Response(status=todo)

    accepted: list[dict[str, Any]]

    async def __aenter__(self) -> Receiver:
        self.accepted = []
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.arrived.clear()
                await self.arrived.wait()

    def unique(self) -> list[dict[str, Any]]:
        """Accepted events, deduplicated by id (as a receiver must), in arrival order."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for e in self.accepted:
            if e["id"] not in seen:
                seen.add(e["id"])
                out.append(e)
        return out


def verify(req: dict[str, Any]) -> bool:
    """The README's recipe: HMAC-SHA256 over timestamp + "." + body."""
    h = req["headers"]
    ts: str = h["X-ENF-Timestamp"]
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + req["body"], hashlib.sha256)
    fresh = abs(time.time() - int(ts)) < 300
    body = json.loads(req["body"])
    return (
        fresh
        and hmac.compare_digest(mac.hexdigest(), h["X-ENF-Signature"])
        and (h["X-ENF-Event-Id"] == body["id"])
    )


def fast_retries(**extra: Any) -> dict[str, Any]:
    return {
        "webhook_secret": SECRET,
        "delivery_base_s": 0.02,
        "delivery_cap_s": 0.1,
        "delivery_max_attempts": 6,
        "breaker_cooldown_s": 0.2,
        **extra,
    }


async def outbox_rows(database: str, session_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, type, status, attempts, last_error, payload::text AS payload"
            " FROM outbox WHERE session_id = $1 ORDER BY n",
            session_id,
        )
    finally:
        await conn.close()
    return rows


async def test_a_flaky_receiver_gets_every_event_once_in_order_signed(
    make_server: MakeServer, database: str
) -> None:
    async with Receiver(lambda n: 500 if n < 3 else 200) as rx:
        h = await make_server(webhook_url=rx.url, **fast_retries())
        customer, notary, sid = await assigned_session(h)
        await run_video_to_completion(customer, notary, sid)
        rows = await outbox_rows(database, sid)
        webhook_ids = [r["id"] for r in rows if r["type"] != "sms"]
        await rx.wait_for(lambda: {e["id"] for e in rx.accepted} >= set(webhook_ids))
    got = rx.unique()
    assert [e["id"] for e in got] == webhook_ids  # once each, in commit order
    assert all(verify(r) for r in rx.requests)
    types = [e["type"] for e in got]
    assert types[0] == "session.requested" and types[-1] == "payment.release"
    assert "payment.hold" in types and "session.notarized" in types
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs) and all(e["session_id"] == sid for e in got)
    # The three failures were retried, and nothing was sent twice otherwise.
    assert len(rx.requests) == len(webhook_ids) + 3


async def test_dead_letters_are_visible_and_replayed(
    make_server: MakeServer, database: str
) -> None:
    healthy = False
    async with Receiver(lambda n: 200 if healthy else 503) as rx:
        h = await make_server(webhook_url=rx.url, **fast_retries(delivery_max_attempts=3))
        customer = await h.client("c1", "customer")
        sid = await request_session(customer)
        await customer.call("session.cancel", {"session_id": sid, "reason": "changed my mind"})
        admin = h.token("ops", "admin")
        dead: list[dict[str, Any]] = []

        async def two_dead() -> bool:
            status, body = await http_call(
                h, "GET", f"/v1/deliveries?status=dead&session_id={sid}", admin
            )
            assert status == 200, body
            dead[:] = body["deliveries"]
            return len(dead) == 2

        async with asyncio.timeout(30):
            while True:  # dead-lettering is announced by no event: polled
                if await two_dead():
                    break
                await asyncio.sleep(0.1)
        assert all(d["attempts"] == 3 and "503" in d["last_error"] for d in dead)
        status, one = await http_call(h, "GET", f"/v1/deliveries/{dead[0]['id']}", admin)
        assert status == 200 and one["status"] == "dead"
        replay = f"/v1/deliveries/{dead[0]['id']}/replay"
        status, body = await http_call(h, "POST", replay, h.token("c1", "customer"))
        assert status == 403 and body["error"]["code"] == "forbidden"
        assert len(rx.accepted) == 0
        healthy = True
        for d in dead:
            status, body = await http_call(h, "POST", f"/v1/deliveries/{d['id']}/replay", admin)
            assert status == 200 and body["status"] == "pending"
        await rx.wait_for(lambda: len(rx.unique()) == 2)
        status, body = await http_call(h, "POST", replay, admin)
        assert status == 409 and body["error"]["code"] == "conflict"  # nothing to replay
        await asyncio.sleep(0.5)  # no event says "nothing more will come": a second copy would
    assert sorted(e["type"] for e in rx.unique()) == ["session.cancelled", "session.requested"]
    assert len(rx.accepted) == 2  # each delivered once
    rows = await outbox_rows(database, sid)
    assert {r["status"] for r in rows} == {"delivered"}


async def test_a_4xx_is_dead_at_once_and_the_circuit_opens_for_a_down_receiver(
    make_server: MakeServer,
) -> None:
    async with Receiver(lambda n: 422) as rx:
        h = await make_server(webhook_url=rx.url, **fast_retries())
        customer = await h.client("c1", "customer")
        await request_session(customer)
        await eventually(lambda: h.services.deliveries.stats.dead > 0, 20)
        assert len(rx.requests) == 1  # no retry for a 422
    # The receiver is gone now: after a few failures the breaker opens.
    for i in range(3):
        await request_session(customer, f"d{i}", i + 2)
    worker = h.services.deliveries
    await eventually(lambda: any(b.state != "closed" for b in worker.breakers.values()))


async def test_killed_between_commit_and_delivery_nothing_is_lost(
    database: str, tmp_path: Path, held_socket: socket.socket
) -> None:
    port = held_socket.getsockname()[1]
    env = server_env(
        database,
        tmp_path,
        ENF_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",  # nobody listens yet
        ENF_WEBHOOK_SECRET=SECRET,
        ENF_DELIVERY_BASE_S="0.05",
        ENF_DELIVERY_CAP_S="0.2",
    )
    server = ServerProcess(env, tmp_path / "server.log")
    await server.start()
    c = await server.client("c1", "customer")
    sids = [await request_session(c, f"k{i}", i) for i in range(3)]
    server.kill()
    await server.wait_dead()
    await server.close_clients()
    pending = [r for sid in sids for r in await outbox_rows(database, sid)]
    assert len(pending) == 3 and all(r["status"] == "pending" for r in pending)

    app = web.Application()
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        return web.Response(status=204)

    app.router.add_post("/hook", hook)
    rx = TestServer(app, host="127.0.0.1", port=port, socket_factory=lambda *_: held_socket)
    await rx.start_server()
    try:
        await server.start()
        await eventually(lambda: len({e["id"] for e in got}) >= 3)
    finally:
        await server.stop()
        await rx.close()
    assert {e["session_id"] for e in got} == set(sids)
    assert {e["id"] for e in got} == {r["id"] for r in pending}


async def test_payments_for_completed_and_cancelled_sessions(
    make_server: MakeServer, database: str
) -> None:
    h = await make_server(platform_fee_share=0.2)
    customer, notary, sid = await assigned_session(h)  # tariff 100 by default
    await run_video_to_completion(customer, notary, sid)
    c2 = await h.client("c2", "customer")
    sid2 = await request_session(c2, "k2", 2)
    await accept_next_offer(notary, c2, timeout=20)
    await c2.call("session.cancel", {"session_id": sid2, "reason": "no longer needed"})
    c3 = await h.client("c3", "customer")
    sid3 = await request_session(c3, "k3", 3)
    await c3.call("session.cancel", {"session_id": sid3, "reason": "too slow"})

    def payments(rows: list[asyncpg.Record]) -> dict[str, dict[str, Any]]:
        return {
            r["type"]: json.loads(r["payload"])["data"]
            for r in rows
            if r["type"].startswith("payment.")
        }

    done = payments(await outbox_rows(database, sid))
    assert set(done) == {"payment.hold", "payment.release"}
    amount = done["payment.hold"]["amount"]
    assert amount > 0
    assert done["payment.hold"]["platform_fee"] == pytest.approx(amount * 0.2)
    assert done["payment.hold"]["enp_fee"] == pytest.approx(amount * 0.8)
    assert done["payment.release"]["amount"] == amount
    cancelled = payments(await outbox_rows(database, sid2))
    assert set(cancelled) == {"payment.hold", "payment.refund"}
    assert cancelled["payment.refund"]["amount"] == cancelled["payment.hold"]["amount"]
    assert cancelled["payment.refund"]["reason"] == "no longer needed"
    assert payments(await outbox_rows(database, sid3)) == {}  # nothing was held


# -- SMS through Twilio's own client -------------------------------------------------------

TW_SID, TW_TOKEN = "AC" + "9" * 32, "twilio-token-for-sms-tests"


class MessagesStandIn:
    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self.create)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def create(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        auth = aiohttp.BasicAuth.decode(request.headers["Authorization"])
        if (auth.login, auth.password) != (TW_SID, TW_TOKEN):
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        if form["To"].endswith("0000"):  # a number Twilio refuses
            return web.json_response(
                {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400},
                status=400,
            )
        self.messages.append(form)
        return web.json_response(
            {
                "sid": "SM" + str(len(self.messages)).rjust(32, "0"),
                "status": "queued",
                "to": form["To"],
                "from": form.get("From"),
                "body": form["Body"],
            },
            status=201,
        )


async def test_sms_distribution_through_twilio(
    make_server: MakeServer, messages_api: MessagesStandIn
) -> None:
    async with Receiver() as rx:
        h = await make_server(
            webhook_url=rx.url,
            twilio_api_base=str(messages_api.server.make_url("/")),
            **fast_retries(),
        )
        h.services.settings.public_url = h.base_url
        customer, notary, sid = await assigned_session(h)
        await run_to_notarized(customer, notary, sid)
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


async def test_a_hung_receiver_does_not_slow_sessions(make_server: MakeServer) -> None:
    # Answers after 5 s, always past the sender's 1 s timeout (and short enough
    # for the receiver to close at the end of the test).
    async with Receiver(lambda n: 5.0) as rx:
        h = await make_server(webhook_url=rx.url, **fast_retries(delivery_timeout_s=1))
        customer, notary, sid = await assigned_session(h)
        # The whole session runs with every request's usual timeout (10 s)
        # while the delivery worker waits on the receiver.
        await run_video_to_completion(customer, notary, sid)
        assert len(rx.requests) >= 1 and not rx.accepted


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


async def test_a_lost_delivery_report_is_picked_up_from_the_outbox(
    make_server: MakeServer, database: str
) -> None:
    # No webhook URL: the delivery waits; then it is marked delivered behind the
    # session's back, as a worker whose report to the session got lost would.
    h = await make_server(delivery_resync_s=0.2)
    customer, notary, sid = await assigned_session(h)
    await run_to_notarized(customer, notary, sid)
    await customer.call(
        "session.distribute",
        {"session_id": sid, "recipients": [{"channel": "webhook", "to": "archive"}]},
    )
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "UPDATE outbox SET status = 'delivered', delivered_at = now()"
            " WHERE session_id = $1 AND recipient = 0",
            sid,
        )
    finally:
        await conn.close()
    done = await customer.expect("session.state", state="COMPLETED", timeout=10)
    assert done["data"]["by"] == "system"
    status = next(e for e in customer.events if e.get("name") == "delivery.status")
    assert status["data"]["status"] == "delivered"

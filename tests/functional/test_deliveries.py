"""Deliveries with real HTTP receivers on loopback and real Postgres: the
outbox, signed webhooks, retries, dead letters and replay, a crash between
commit and delivery, a dead receiver that does not slow sessions down and a
lost delivery report; with the stand-ins the delivery tests share (a webhook
`Receiver`, Twilio's Messages API). Payment events: test_payments.py; SMS
through Twilio's own client: test_sms.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer
from enf_client import EnfClient

from tests.conftest import Harness, MakeServer
from tests.flows import (
    assigned_session,
    eventually,
    http_call,
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


async def notarized_for_distribution(
    make_server: MakeServer, messages_api: MessagesStandIn, rx: Receiver
) -> tuple[Harness, EnfClient, str]:
    """A server posting webhooks to `rx` and SMS to the Messages stand-in
    (fast retries), with a session notarized and ready to distribute: the
    server, the customer and the session id."""
    h = await make_server(
        webhook_url=rx.url,
        twilio_api_base=str(messages_api.server.make_url("/")),
        **fast_retries(),
    )
    h.services.settings.public_url = h.base_url
    customer, notary, sid = await assigned_session(h)
    await run_to_notarized(customer, notary, sid)
    return h, customer, sid


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


# -- Twilio's Messages API on loopback (conftest.py's `messages_api`; the SMS tests: test_sms.py)

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


async def test_events_held_without_a_receiver_go_once_one_is_set(
    make_server: MakeServer, database: str
) -> None:
    """With no ENF_WEBHOOK_URL, a session's events wait in the outbox with the
    reason, untouched by later polls; the first server with a receiver sends
    them all, in order."""
    h = await make_server()
    customer, notary, sid = await assigned_session(h)
    await run_to_notarized(customer, notary, sid)

    async def held() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database)
        try:
            return list(
                await conn.fetch(
                    "SELECT id, last_error, attempts FROM outbox WHERE session_id = $1"
                    " AND next_attempt_at = 'infinity' ORDER BY n",
                    sid,
                )
            )
        finally:
            await conn.close()

    rows = await outbox_rows(database, sid)
    assert len(rows) >= 3
    async with asyncio.timeout(30):  # the worker's next polls hold them
        while True:
            if len(await held()) == len(rows):
                break
            await asyncio.sleep(0.05)
    assert all("ENF_WEBHOOK_URL" in r["last_error"] and r["attempts"] == 0 for r in await held())
    await h.close_clients()
    await h.server.close()
    async with Receiver() as rx:
        await make_server(webhook_url=rx.url, **fast_retries())
        await rx.wait_for(lambda: len(rx.unique()) >= len(rows))
        assert [e["id"] for e in rx.unique()] == [r["id"] for r in rows]
        assert all(verify(q) for q in rx.requests)

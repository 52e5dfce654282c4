"""Unit-test fixtures: the actors on a real `LocalHost` over a real `Journal`
on a fresh Postgres database (tests/conftest.py's `database`), driven with
`ask` as the gateway drives them after parsing — no sockets, no gateway.

`Rig.inbox` follows topics on the `LocalBus` and records every delivery, so
a test waits for the event it expects instead of sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actors.bus import LocalBus
from actors.kinds import ACTOR_KINDS
from actors.localhost import LocalHost
from config.settings import Settings
from core.errors import ProtocolError
from core.ids import MATCHMAKER, notary_address, session_address, session_id_for
from core.messages import Caller, Delivery, Message, Reply, Role
from gateway.metrics import Metrics
from persistence.directory import put_notary_profile
from persistence.journal import Journal
from persistence.keys import Keys
from persistence.migrate import apply_migrations
from persistence.pool import create_pool

WAIT_S = 10.0

# A declared place in the Philippines, for session.join.
PH: dict[str, Any] = {"lat": 14.5995, "lng": 120.9842, "country": "PH"}
CONSENT: dict[str, bool] = {"recording": True, "privacy": True}


def unit_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Explicit settings: WebRTC with the recorder off, the outbox on."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "recording": "off",
        "video_provider": "webrtc",
        "outbox": True,
        "offer_timeout_s": 30.0,
        "request_ttl_s": 900.0,
        "reconnect_grace_s": 20.0,
        "delivery_resync_s": 30.0,
        "shards": 2,
        "snapshot_every": 50,
        "allowed_countries": "PH",
        "platform_fee_share": 0.2,
        "log_format": "console",
    }
    base.update(overrides)
    return Settings(**base)


def document(n: int = 1, type_: str = "affidavit") -> dict[str, str]:
    """A document as `session.request` hands it over (checked by the gateway)."""
    return {
        "id": f"doc-{n}",
        "sha256": f"{n:064x}",
        "type": type_,
        "title": f"Affidavit of loss #{n}",
    }


class Inbox:
    """A bus subscriber: every delivery of the topics it follows, in order."""

    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self.got: list[Delivery] = []
        self._arrived = asyncio.Event()

    def deliver(self, d: Delivery) -> None:
        self.got.append(d)
        self._arrived.set()

    def follow(self, *topics: str) -> None:
        for topic in topics:
            self.bus.subscribe(topic, self)

    def events(self, topic: str, name: str | None = None) -> list[dict[str, Any]]:
        """The events seen on `topic` (of `name`, if given), oldest first."""
        return [
            d.event
            for d in self.got
            if d.topic == topic and (name is None or d.event["name"] == name)
        ]

    def durable(self, topic: str) -> list[dict[str, Any]]:
        """The journaled events seen on `topic` (those with a seq), oldest first."""
        return [d.event for d in self.got if d.topic == topic and d.seq is not None]

    def _find(
        self, topic: str, name: str, match: dict[str, Any], skip: int
    ) -> dict[str, Any] | None:
        found = [
            e
            for e in self.events(topic, name)
            if all(e["data"].get(k) == v for k, v in match.items())
        ]
        return found[skip] if len(found) > skip else None

    async def wait(self, topic: str, name: str, skip: int = 0, **match: Any) -> dict[str, Any]:
        """The first event `name` on `topic` whose data holds `match` (after
        `skip` such events), once it came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while (found := self._find(topic, name, match, skip)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [e["name"] for e in self.events(topic)]
                raise AssertionError(f"no {name} {match} on {topic} in {WAIT_S} s; saw {seen}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass
        return found


class Rig:
    """The actor host and what it stands on; `ask` as the gateway asks."""

    def __init__(self, host: LocalHost, journal: Journal, bus: LocalBus, metrics: Metrics) -> None:
        self.host = host
        self.metrics = metrics
        self.journal = journal
        self.settings = host.settings
        self.inbox = Inbox(bus)
        self._request_ids = itertools.count(1)

    @property
    def pool(self) -> asyncpg.Pool:
        return self.journal.pool

    def caller(self, user_id: str, role: Role, **claims: Any) -> Caller:
        """Who the gateway says sent a request: one connection per user, a
        fresh request id per request."""
        return Caller(
            user_id,
            role,
            connection_id=f"conn-{user_id}",
            request_id=str(next(self._request_ids)),
            kyc_verified=True,
            claims=dict(claims),
        )

    async def ask(
        self,
        address: str,
        kind: str,
        data: dict[str, Any] | None = None,
        caller: Caller | None = None,
    ) -> Any:
        return await self.host.ask(address, Message(kind, data or {}, caller))

    async def request_to(
        self, address: str, kind: str, data: dict[str, Any], caller: Caller
    ) -> Reply:
        """A client request: its handler answers with a Reply."""
        reply = await self.ask(address, kind, data, caller)
        assert isinstance(reply, Reply), reply
        return reply

    async def session(
        self, sid: str, kind: str, user_id: str, role: Role, data: dict[str, Any] | None = None
    ) -> Reply:
        """A request of `user_id` to session `sid` (its id added to the data)."""
        body = {"session_id": sid, **(data or {})}
        return await self.request_to(session_address(sid), kind, body, self.caller(user_id, role))

    async def snapshot(self, sid: str, user_id: str, role: Role) -> dict[str, Any]:
        """The session's public snapshot, as the HTTP API asks for it."""
        view: dict[str, Any] = await self.ask(
            session_address(sid), "snapshot", {}, self.caller(user_id, role)
        )
        return view

    async def notary(self, notary_id: str, kind: str, data: dict[str, Any] | None = None) -> Reply:
        """A request of notary `notary_id` to its own actor."""
        return await self.request_to(
            notary_address(notary_id), kind, data or {}, self.caller(notary_id, "enp")
        )

    async def matchmaker(self, kind: str, data: dict[str, Any] | None = None) -> Any:
        return await self.ask(MATCHMAKER, kind, data)

    async def put_notary(self, notary_id: str, **profile: Any) -> None:
        """A notary's profile, as an admin sets it (PUT /v1/notaries/{id})."""
        body = {
            "name": f"Atty. {notary_id}",
            "license_number": f"LIC-{notary_id}",
            "rating": 4.0,
            "tariff": 500.0,
            "specializations": ["affidavit"],
            "avg_response_time_s": 30.0,
            **profile,
        }
        await put_notary_profile(self.pool, notary_id, body)
        self.host.tell(notary_address(notary_id), Message("profile_updated"))

    async def online(self, notary_id: str, **profile: Any) -> None:
        """A notary with a profile, online and following its own topic."""
        await self.put_notary(notary_id, **profile)
        self.inbox.follow(notary_address(notary_id))
        reply = await self.notary(notary_id, "presence.online")
        assert reply.data["status"] == "available"

    async def request(self, customer: str, key: str = "k", **extra: Any) -> str:
        """`session.request` of `customer`; its session id (followed by the inbox)."""
        data = {"idempotency_key": key, "document": document(), **extra}
        address = session_address(session_id_for(customer, key))
        self.inbox.follow(address)
        caller = self.caller(customer, "customer")
        reply = await self.request_to(address, "session.request", data, caller)
        sid: str = reply.data["session_id"]
        return sid

    # -- the lifecycle's steps, as the parties take them ---------------------------

    async def assigned(self, customer: str, notary: str) -> str:
        """The notary online, the customer's request offered to it and accepted:
        an ENP_ASSIGNED session's id."""
        await self.online(notary)
        sid = await self.request(customer)
        offer = await self.inbox.wait(notary_address(notary), "offer", session_id=sid)
        reply = await self.notary(notary, "offer.accept", {"offer_id": offer["data"]["offer_id"]})
        assert reply.data == {"session_id": sid}
        await self.inbox.wait(session_address(sid), "session.state", state="ENP_ASSIGNED")
        return sid

    async def join_both(self, sid: str, customer: str, notary: str) -> None:
        """Both join from the Philippines; the customer consents to recording and privacy."""
        await self.session(
            sid, "session.join", customer, "customer", {"consent": CONSENT, "location": PH}
        )
        await self.session(sid, "session.join", notary, "enp", {"location": PH})

    async def in_video(self, sid: str, customer: str, notary: str) -> None:
        """From ENP_ASSIGNED to VIDEO_IN_PROGRESS."""
        await self.join_both(sid, customer, notary)
        await self.session(sid, "video.start", notary, "enp")
        await self.inbox.wait(session_address(sid), "session.state", state="VIDEO_IN_PROGRESS")

    async def act(self, sid: str, customer: str, notary: str) -> None:
        """During the video: checks recorded, signed, sealed."""
        checks = {"comprehension_confirmed": True, "duress_check_passed": True}
        await self.session(sid, "checks.record", notary, "enp", checks)
        await self.session(sid, "act.sign", customer, "customer", {"signature": "c2lnbmF0dXJl"})
        seal = {"signature": "ZW5wLXNpZw==", "seal": "c2VhbA=="}
        await self.session(sid, "act.seal", notary, "enp", seal)

    async def notarized(self, sid: str, customer: str, notary: str) -> None:
        """From ENP_ASSIGNED to NOTARIZED (the envelope issued)."""
        await self.in_video(sid, customer, notary)
        await self.act(sid, customer, notary)
        await self.session(sid, "video.end", notary, "enp")
        await self.session(sid, "session.notarize", notary, "enp")
        await self.inbox.wait(session_address(sid), "session.notarized")

    async def offers(self, notary: str) -> list[dict[str, Any]]:
        """The offers made to `notary` (whose topic the inbox follows), once the
        Matchmaker has handled everything sent to it so far."""
        await self.matchmaker("presence_list")
        return self.inbox.events(notary_address(notary), "offer")

    def states(self, sid: str) -> list[str]:
        """The states the session went through, from its events."""
        return [
            e["data"]["state"] for e in self.inbox.events(session_address(sid), "session.state")
        ]


StartRig = Callable[..., Awaitable[Rig]]


async def refused(code: str, call: Callable[[], Awaitable[Any]]) -> ProtocolError:
    """The ProtocolError `call()` raises, checked to carry `code`."""
    with pytest.raises(ProtocolError) as caught:
        await call()
    assert caught.value.code == code, caught.value
    return caught.value


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """The signing and PII keys, made in the test's directory (files: loaded
    outside the event loop)."""
    return Keys.load(None, None, tmp_path)


@pytest.fixture
async def make_rig(database: str, tmp_path: Path, keys: Keys) -> AsyncIterator[StartRig]:
    """Starts rigs on the test's database (settings overridable); stops them after."""
    started: list[tuple[LocalHost, Journal]] = []
    pool = await create_pool(database, max_size=10)
    async with pool.acquire() as conn:
        await apply_migrations(conn)

    async def start(**overrides: Any) -> Rig:
        settings = unit_settings(tmp_path, **overrides)
        journal = Journal(
            pool, writers=settings.journal_writers, max_batch=settings.journal_max_batch
        )
        await journal.start()
        bus = LocalBus()
        metrics = Metrics()
        host = LocalHost(settings, journal, bus, ACTOR_KINDS, keys, metrics=metrics)
        await host.start()
        started.append((host, journal))
        return Rig(host, journal, bus, metrics)

    try:
        yield start
    finally:
        for host, journal in reversed(started):
            await host.stop()
            await journal.stop()
        await asyncio.wait_for(pool.close(), 10)


@pytest.fixture
async def rig(make_rig: StartRig) -> Rig:
    return await make_rig()

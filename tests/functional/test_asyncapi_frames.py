"""Issue 16: every frame on the WebSocket matches the AsyncAPI document
(gateway/http/asyncapi.py). Whole lifecycles against the real server, in
both subprotocols, recorded at the socket level (tests/wire_frames.py:
every frame each side sent and received), then each frame validated with
`jsonschema` against the one message of the document it must match, with
no key the document does not name. Each test also asserts the message kinds
it exercised were seen, so none passes on frames it never checked; together
they exercise every message of the document.

- The lifecycle (JSON and msgpack): presence, matching (a decline, then an
  accept), joins, signaling relayed between the parties, the call, the act,
  notarization, distribution to a webhook recipient until COMPLETED; a
  pause and resume, a cancel in the call, a cancel while offered; refusals.
- The recording (ENF_RECORDING=required): two aiortc parties send their
  media to the server's recorder, `recording.ready`; a call ended without
  media, `recording.failed` and FAILED.
- An offer left to expire.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from gateway.http.asyncapi import asyncapi_document
from tests.conftest import Harness, MakeServer
from tests.flows import ADMIN, MANILA, PH, doc, put_notary
from tests.wire_frames import FrameChecker, Socket

# An SDP the server only checks the outline of (relayed between parties as it is).
SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ICE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host", "sdpMid": "0"}
CONSENT = {"recording": True, "privacy": True}
CHECKS = {"comprehension_confirmed": True, "duress_check_passed": True}
SECRET = "webhook-secret-for-the-frame-tests-0123456789"

DOC = asyncapi_document()
REQUEST_TYPES = [
    m.removeprefix("request.") for m in DOC["components"]["messages"] if m.startswith("request.")
]
LIFECYCLE = {
    "hello",
    "welcome",
    "reply.error",
    *(f"request.{t}" for t in REQUEST_TYPES),
    *(f"reply.{t}" for t in REQUEST_TYPES),
    *(
        f"event.{name}"
        for name in (
            "session.state",
            "participant.joined",
            "participant.left",
            "session.paused",
            "session.resumed",
            "checks.recorded",
            "act.signed",
            "act.sealed",
            "session.notarized",
            "delivery.status",
            "offer",
            "offer.withdrawn",
            "signal",
            "notary.presence",
            "video.config",
            "notification",
        )
    ),
}
RECORDING = {"event.recording.started", "event.recording.ready", "event.recording.failed"}
EXPIRY = {"event.offer.expired"}


@pytest.fixture
async def sockets() -> AsyncIterator[list[Socket]]:
    """The test's sockets, closed after it (before its servers)."""
    opened: list[Socket] = []
    yield opened
    for s in opened:
        await s.close()


class Webhooks:
    """A webhook receiver that takes everything (for `session.distribute`)."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))


@pytest.fixture
async def webhooks() -> AsyncIterator[Webhooks]:
    rx = Webhooks()
    await rx.server.start_server()
    yield rx
    await rx.server.close()


async def connect(
    h: Harness,
    sockets: list[Socket],
    codec: str,
    sub: str,
    role: str,
    *,
    hello: bool,
    **claims: Any,
) -> Socket:
    s = Socket(sub if not claims else f"{sub}-again", codec)
    sockets.append(s)
    await s.connect(h.ws_url, h.token(sub, role, **claims), hello=hello)
    return s


def assert_frames_match(sockets: list[Socket], exercised: set[str]) -> None:
    checker = FrameChecker(DOC)
    faults = checker.check(sockets)
    assert not faults, "frames that do not match the AsyncAPI document:\n" + "\n".join(faults)
    assert exercised <= set(checker.seen), f"never seen: {sorted(exercised - set(checker.seen))}"


def test_the_tests_exercise_every_message_of_the_document() -> None:
    assert LIFECYCLE | RECORDING | EXPIRY == set(DOC["components"]["messages"])


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_a_whole_lifecycle_matches_the_document(
    make_server: MakeServer, webhooks: Webhooks, sockets: list[Socket], codec: str
) -> None:
    h = await make_server(webhook_url=webhooks.url, webhook_secret=SECRET)
    await put_notary(h, "n-best", rating=5.0)
    await put_notary(h, "n-other", rating=3.0)
    admin = await connect(h, sockets, codec, ADMIN, "admin", hello=False)
    assert "notaries" in await admin.call("presence.subscribe")
    best = await connect(h, sockets, codec, "n-best", "enp", hello=False)
    other = await connect(h, sockets, codec, "n-other", "enp", hello=True)
    customer = await connect(h, sockets, codec, "c1", "customer", hello=True)
    for notary in (best, other):
        assert (await notary.call("presence.online"))["status"] == "available"
    await admin.expect("notary.presence", notary_id="n-other", status="available")
    assert await best.call("presence.set", {"status": "away"}) == {"status": "away"}
    await best.call("presence.set", {"status": "available"})
    found = await customer.call("notaries.available", {"location": MANILA, "limit": 5})
    assert {n["notary_id"] for n in found["notaries"]} == {"n-best", "n-other"}
    assert "server_time" in await admin.call("ping")
    await refusals(customer)
    sid = await first_session(customer, best, other, admin)
    await paused_and_cancelled(h, sockets, customer, best, other)
    await cancelled_while_offered(customer, best, sid)
    await best.call("presence.offline")
    await admin.expect("notary.presence", notary_id="n-best", status="offline")
    assert_frames_match(sockets, LIFECYCLE)


async def refusals(customer: Socket) -> None:
    """A wrong role, an unknown session, an unknown type, an unreadable frame."""
    await customer.refused("offer.accept", {"offer_id": "o-1"}, "forbidden")
    await customer.refused("session.join", {"session_id": "no-such-session"}, "not_found")
    await customer.send({"id": "bad-1", "type": "no.such.request", "data": {}}, bad=True)
    reply = await customer.wait(lambda f: f.get("re") == "bad-1")
    assert reply["error"]["code"] == "bad_request"
    await customer.send([1, 2], bad=True)  # not an object: a reply to nobody
    reply = await customer.wait(lambda f: "re" in f and f["re"] is None)
    assert reply["error"]["code"] == "bad_request"


async def first_session(customer: Socket, best: Socket, other: Socket, admin: Socket) -> str:
    """Declined by one notary, accepted by the other, notarized, distributed."""
    principal = {"name": "Maria Clara Santos", "id_type": "passport", "id_number": "P123"}
    body = {"idempotency_key": "k1", "document": doc(1), "principal": principal, "location": MANILA}
    sid: str = (await customer.call("session.request", body))["session_id"]
    topic = f"session:{sid}"
    await customer.expect("session.state", topic, state="REQUESTED")
    offer = (await best.expect("offer", session_id=sid))["data"]
    await best.call("offer.decline", {"offer_id": offer["offer_id"]})
    await best.expect("offer.withdrawn", offer_id=offer["offer_id"], reason="declined")
    offer = (await other.expect("offer", session_id=sid))["data"]
    assert await other.call("offer.accept", {"offer_id": offer["offer_id"]}) == {"session_id": sid}
    await customer.expect("session.state", topic, state="ENP_ASSIGNED")
    ref = {"session_id": sid}
    await customer.call("session.join", {**ref, "consent": CONSENT, "location": PH})
    await other.call("session.join", {**ref, "location": PH})
    await other.refused("act.seal", {**ref, "signature": "ZQ==", "seal": "cw=="}, "conflict")
    assert (await other.call("video.start", ref))["provider"] == "webrtc"
    await customer.expect("video.config")
    await customer.expect("session.state", topic, state="VIDEO_IN_PROGRESS")
    # Signaling, relayed between the parties.
    await customer.call("signal", {**ref, "to": "n-other", "kind": "offer", "sdp": SDP})
    await other.expect("signal", topic, kind="offer")
    await other.call("signal", {**ref, "to": "c1", "kind": "answer", "sdp": SDP})
    await customer.expect("signal", topic, kind="answer")
    await customer.call("signal", {**ref, "to": "n-other", "kind": "ice", "candidate": ICE})
    await other.expect("signal", topic, kind="ice")
    # Back in the call (a reconnect would): the snapshot and the call's settings.
    assert "video" in await customer.call("session.join", ref)
    await other.call("video.start", ref)
    await other.call("checks.record", {**ref, **CHECKS})
    await customer.call("act.sign", {**ref, "signature": "c2ln"})
    await other.call("act.seal", {**ref, "signature": "ZQ==", "seal": "cw=="})
    await customer.expect("act.sealed")
    await customer.refused("session.cancel", {**ref, "reason": "too late"}, "conflict")
    await other.call("video.end", ref)
    await other.call("session.notarize", ref)
    await customer.expect("session.notarized")
    recipients = [{"channel": "webhook", "to": "records@registry.example"}]
    await customer.call("session.distribute", {**ref, "recipients": recipients})
    await customer.expect("delivery.status", status="delivered")
    await customer.expect("session.state", topic, state="COMPLETED")
    # An admin replays the whole session.
    await admin.call("session.join", {**ref, "since_seq": 0})
    await admin.expect("session.state", topic, state="COMPLETED")
    return sid


async def paused_and_cancelled(
    h: Harness, sockets: list[Socket], customer: Socket, best: Socket, other: Socket
) -> None:
    """The customer leaves the call (a pause), comes back with a fresh token
    (resumed, after a replay), and cancels."""
    await other.call("presence.set", {"status": "away"})
    body = {"idempotency_key": "k2", "document": doc(2)}
    sid = (await customer.call("session.request", body))["session_id"]
    topic, ref = f"session:{sid}", {"session_id": sid}
    offer = (await best.expect("offer", session_id=sid))["data"]
    await best.call("offer.accept", {"offer_id": offer["offer_id"]})
    await customer.expect("session.state", topic, state="ENP_ASSIGNED")
    await customer.call("session.join", {**ref, "consent": CONSENT, "location": PH})
    await best.call("session.join", {**ref, "location": PH})
    await best.call("video.start", ref)
    await customer.expect("session.state", topic, state="VIDEO_IN_PROGRESS")
    await customer.call("session.leave", ref)
    await best.expect("participant.left", user_id="c1")
    await best.expect("session.paused", topic, user_id="c1")
    fresh = int(time.time()) + 2  # identity verified again: a token issued after the pause
    back = await connect(h, sockets, customer.codec, "c1", "customer", hello=True, iat=fresh)
    await back.call("session.join", {**ref, "since_seq": 0, "location": PH})
    await best.expect("session.resumed", topic)
    await back.call("session.cancel", {**ref, "reason": "changed my mind"})
    await best.expect("session.state", topic, state="CANCELLED")


async def cancelled_while_offered(customer: Socket, best: Socket, first: str) -> None:
    """A request cancelled while its offer is open: the offer is withdrawn."""
    body = {"idempotency_key": "k3", "document": doc(3)}
    sid = (await customer.call("session.request", body))["session_id"]
    assert sid != first
    offer = (await best.expect("offer", session_id=sid))["data"]
    await customer.call("session.cancel", {"session_id": sid, "reason": "no longer needed"})
    await best.expect("offer.withdrawn", offer_id=offer["offer_id"])
    await customer.expect("session.state", f"session:{sid}", state="CANCELLED")


# -- the recording, and an offer that expires --------------------------------------------


async def assigned(customer: Socket, notary: Socket, key: str, n: int) -> tuple[str, str]:
    """A session of `customer` accepted by `notary`, both joined: (id, topic)."""
    body = {"idempotency_key": key, "document": doc(n)}
    sid: str = (await customer.call("session.request", body))["session_id"]
    offer = (await notary.expect("offer", session_id=sid))["data"]
    await notary.call("offer.accept", {"offer_id": offer["offer_id"]})
    await customer.call("session.join", {"session_id": sid, "consent": CONSENT, "location": PH})
    await notary.call("session.join", {"session_id": sid, "location": PH})
    return sid, f"session:{sid}"


async def to_the_recorder(s: Socket, sid: str, pcs: list[Any]) -> None:
    """`s` sends a synthetic camera and microphone to the server's recorder."""
    pc = RTCPeerConnection()
    pcs.append(pc)
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await s.call("signal", {"session_id": sid, "to": "recorder", "kind": "offer", "sdp": sdp})
    answer = await s.expect("signal", f"session:{sid}", **{"from": "recorder"})
    await pc.setRemoteDescription(RTCSessionDescription(answer["data"]["sdp"], "answer"))


async def test_the_recording_matches_the_document(
    make_server: MakeServer, sockets: list[Socket]
) -> None:
    h = await make_server(recording="required")
    await put_notary(h, "n1")
    notary = await connect(h, sockets, "json", "n1", "enp", hello=False)
    await notary.call("presence.online")
    customer = await connect(h, sockets, "json", "c1", "customer", hello=True)
    sid, topic = await assigned(customer, notary, "k1", 1)
    ref = {"session_id": sid}
    assert (await notary.call("video.start", ref))["recorder"] is True
    pcs: list[Any] = []
    try:
        for s in (customer, notary):
            await to_the_recorder(s, sid, pcs)
        await customer.expect("recording.started", topic, user_id="c1")
        await customer.expect("recording.started", topic, user_id="n1")
        await notary.call("checks.record", {**ref, **CHECKS})
        await customer.call("act.sign", {**ref, "signature": "c2ln"})
        await notary.call("act.seal", {**ref, "signature": "ZQ==", "seal": "cw=="})
        await notary.call("video.end", ref)
    finally:
        for pc in pcs:
            await pc.close()
    ready = await customer.expect("recording.ready", topic)
    assert {t["user_id"] for t in ready["data"]["tracks"]} == {"c1", "n1"}
    await notary.call("session.notarize", ref)
    await customer.expect("session.notarized", topic)
    await customer.call("session.distribute", {**ref, "recipients": []})
    await customer.expect("session.state", topic, state="COMPLETED")
    # A call ended before any media reached the recorder: nothing to keep.
    sid, topic = await assigned(customer, notary, "k2", 2)
    await notary.call("video.start", {"session_id": sid})
    await notary.call("video.end", {"session_id": sid})
    failed = await customer.expect("recording.failed", topic)
    assert failed["data"]["tracks"] == []
    await customer.expect("session.state", topic, state="FAILED", reason="recording_failed")
    assert_frames_match(sockets, RECORDING)


async def test_an_expired_offer_matches_the_document(
    make_server: MakeServer, sockets: list[Socket]
) -> None:
    h = await make_server(offer_timeout_s=0.5)
    await put_notary(h, "n1")
    notary = await connect(h, sockets, "msgpack", "n1", "enp", hello=True)
    await notary.call("presence.online")
    customer = await connect(h, sockets, "msgpack", "c1", "customer", hello=False)
    body = {"idempotency_key": "k1", "document": doc(1)}
    sid = (await customer.call("session.request", body))["session_id"]
    offer = (await notary.expect("offer", session_id=sid))["data"]
    await notary.expect("offer.expired", offer_id=offer["offer_id"])
    await customer.call("session.cancel", {"session_id": sid, "reason": "no notary"})
    await customer.expect("session.state", f"session:{sid}", state="CANCELLED")
    assert_frames_match(sockets, EXPIRY)

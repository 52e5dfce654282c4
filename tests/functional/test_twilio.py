"""Twilio Video against a local HTTP stand-in for Twilio's REST API: room
creation, access tokens (decoded with PyJWT), status callbacks signed with
Twilio's own RequestValidator (forged ones refused, duplicates and
out-of-order ones harmless), recording download, storage and hashing."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from tests.conftest import Harness, MakeServer
from tests.flows import assigned_session, in_the_call, join_both, passed_checks, sign_and_seal
from tests.served import Served

SID, TOKEN = "AC" + "1" * 32, "twilio-auth-token-for-tests"
API_KEY, API_SECRET = "SK" + "2" * 32, "api-secret-for-tests-0123456789-abcdef"
MEDIA = os.urandom(50_000)  # what the stand-in serves as a recording


class TwilioStandIn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        app = web.Application()
        app.router.add_post("/v1/Rooms", self.create_room)
        app.router.add_post("/v1/Rooms/{sid}", self.update_room)
        app.router.add_get("/v1/Recordings/{sid}/Media", self.media_redirect)
        app.router.add_get("/media/{sid}", self.media)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    def _auth_ok(self, request: web.Request) -> bool:
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        ok: bool = auth.login == SID and auth.password == TOKEN
        return ok

    async def create_room(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.calls.append(("POST", request.path, form))
        if not self._auth_ok(request):
            return web.json_response({"message": "auth"}, status=401)
        return web.json_response(
            {
                "sid": "RM" + "3" * 32,
                "unique_name": form.get("UniqueName"),
                "status": "in-progress",
                "type": form.get("Type"),
                "account_sid": SID,
            },
            status=201,
        )

    async def update_room(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.calls.append(("POST", request.path, form))
        return web.json_response({"sid": request.match_info["sid"], "status": form["Status"]})

    async def media_redirect(self, request: web.Request) -> web.Response:
        self.calls.append(("GET", request.path, {}))
        if not self._auth_ok(request):
            return web.json_response({"message": "auth"}, status=401)
        raise web.HTTPFound(f"/media/{request.match_info['sid']}")

    async def media(self, request: web.Request) -> web.Response:
        return web.Response(body=MEDIA, content_type="video/x-matroska")


async def post_callback(h: Served, params: dict[str, str], *, signature: str | None = None) -> int:
    url = h.url("/webhooks/twilio/status")
    sig = signature or RequestValidator(TOKEN).compute_signature(url, params)
    async with aiohttp.ClientSession() as s:
        r = await s.post(url, data=params, headers={"X-Twilio-Signature": sig})
        return r.status


async def twilio_server(
    make_server: MakeServer, twilio_api: TwilioStandIn, **settings: Any
) -> Harness:
    """A server whose video is Twilio's (the stand-in), recording required."""
    return await make_server(
        recording="required",
        video_provider="twilio",
        twilio_api_base=str(twilio_api.server.make_url("/")),
        **settings,
    )


async def test_twilio_rooms_tokens_callbacks_and_recordings(
    make_server: MakeServer, twilio_api: TwilioStandIn, tmp_path: Path
) -> None:
    h = await twilio_server(make_server, twilio_api)
    # The callback URL the server registers must be the one it checks against.
    video = h.services.video
    assert video is not None
    video.callback_url = h.url("/webhooks/twilio/status")
    customer, notary, sid = await assigned_session(h)
    started = await in_the_call(customer, notary, sid)
    assert started["provider"] == "twilio" and started["recorder"] is False
    method, path, form = twilio_api.calls[0]
    assert (method, path) == ("POST", "/v1/Rooms")
    assert form["Type"] == "group" and form["UniqueName"] == sid
    assert form["RecordParticipantsOnConnect"] == "true"
    assert form["StatusCallback"] == h.url("/webhooks/twilio/status")

    # Tokens: a VideoGrant for this room only, identity = user id, short TTL.
    token_event = await customer.expect("video.config")
    assert token_event["data"]["provider"] == "twilio" and "seq" not in token_event
    for token, user in ((started["token"], "n1"), (token_event["data"]["token"], "c1")):
        claims = jwt.decode(token, API_SECRET, algorithms=["HS256"])
        assert claims["iss"] == API_KEY and claims["sub"] == SID
        assert claims["grants"]["identity"] == user
        assert claims["grants"]["video"] == {"room": sid}
        assert 0 < claims["exp"] - time.time() <= 15 * 60 + 5  # short-lived
    rejoin = await customer.call("session.join", {"session_id": sid})
    assert rejoin["video"]["room_name"] == sid
    # video.start again in the call: a fresh token for the same room, no new
    # room and no change of state.
    head = rejoin["session"]["seq"]
    again = await notary.call("video.start", {"session_id": sid})
    assert again["provider"] == "twilio" and again["room_name"] == started["room_name"] == sid
    claims = jwt.decode(again["token"], API_SECRET, algorithms=["HS256"])
    assert claims["grants"] == {"identity": "n1", "video": {"room": sid}}
    first = jwt.decode(started["token"], API_SECRET, algorithms=["HS256"])
    assert claims["exp"] >= first["exp"]
    assert [c for c in twilio_api.calls if c[1] == "/v1/Rooms"] == twilio_api.calls[:1]
    snap = (await notary.call("session.join", {"session_id": sid}))["session"]
    assert (snap["state"], snap["seq"]) == ("VIDEO_IN_PROGRESS", head)

    room = {"RoomSid": "RM" + "3" * 32, "RoomName": sid, "AccountSid": SID}
    rec = {
        **room,
        "RecordingSid": "RT" + "4" * 32,
        "ParticipantIdentity": "c1",
        "Type": "video",
        "Container": "mkv",
        "Duration": "42",
    }
    # A forged callback is refused, and changes nothing.
    assert (
        await post_callback(
            h, {**rec, "StatusCallbackEvent": "recording-started"}, signature="forged"
        )
        == 403
    )
    assert await post_callback(h, {**rec, "StatusCallbackEvent": "recording-started"}) == 204
    assert await post_callback(h, {**rec, "StatusCallbackEvent": "recording-started"}) == 204
    await customer.expect("recording.started", user_id="c1")
    # In full view only once every party's video is recorded (per party).
    refused = await notary.request("checks.record", passed_checks(sid))
    assert refused["error"]["code"] == "conflict" and "notary" in refused["error"]["message"]
    rec_n = {**rec, "RecordingSid": "RT" + "6" * 32, "ParticipantIdentity": "n1"}
    assert await post_callback(h, {**rec_n, "StatusCallbackEvent": "recording-started"}) == 204
    await customer.expect("recording.started", user_id="n1")
    await sign_and_seal(customer, notary, sid)
    await notary.call("video.end", {"session_id": sid})
    assert ("POST", f"/v1/Rooms/{room['RoomSid']}", {"Status": "completed"}) in twilio_api.calls
    # Out of order: the room ends before the recording completes; then twice.
    assert await post_callback(h, {**room, "StatusCallbackEvent": "room-ended"}) == 204
    for _ in range(2):
        for track in (rec, rec_n):
            done = {**track, "StatusCallbackEvent": "recording-completed"}
            assert await post_callback(h, done) == 204
    ready = (await customer.expect("recording.ready", timeout=20))["data"]
    assert ready["sha256"] == hashlib.sha256(MEDIA).hexdigest() and ready["bytes"] == len(MEDIA)
    assert urlparse(ready["url"]).scheme == "file" and ready["duration_s"] == 42.0
    assert len(ready["tracks"]) == 2
    r = await notary.request("session.notarize", {"session_id": sid})
    assert r["ok"], r
    await customer.expect("session.notarized")
    events = [e["name"] for e in customer.events if e.get("topic") == f"session:{sid}"]
    assert events.count("recording.ready") == 1 and events.count("recording.started") == 2
    assert "session.paused" not in events  # the room closing after video.end is no loss


async def test_a_failed_twilio_recording_is_reported(
    make_server: MakeServer, twilio_api: TwilioStandIn
) -> None:
    h = await twilio_server(make_server, twilio_api)
    customer, notary, sid = await assigned_session(h)
    await join_both(customer, notary, sid)
    await notary.call("video.start", {"session_id": sid})
    room = {"RoomSid": "RM" + "3" * 32, "RoomName": sid}
    rec = {**room, "RecordingSid": "RT" + "5" * 32, "ParticipantIdentity": "n1"}
    assert await post_callback(h, {**rec, "StatusCallbackEvent": "recording-started"}) == 204
    await customer.expect("recording.started")
    await notary.call("video.end", {"session_id": sid})
    # It fails as the room closes (during the call it would pause the act:
    # test_a_party_whose_twilio_recording_stops_pauses_the_act).
    assert await post_callback(h, {**rec, "StatusCallbackEvent": "recording-failed"}) == 204
    assert await post_callback(h, {**room, "StatusCallbackEvent": "room-ended"}) == 204
    failed = (await customer.expect("recording.failed", timeout=20))["data"]
    assert "failed" in failed["reason"] and "user_id" not in failed
    # PROTOCOL §5: with ENF_RECORDING=required, nothing usable after
    # video.end ends the act FAILED (recording_failed), and both parties hear it.
    for c in (customer, notary):
        state = await c.expect("session.state", state="FAILED", timeout=20)
        assert (state["data"]["reason"], state["data"]["by"]) == ("recording_failed", "system")
    r = await notary.request("session.notarize", {"session_id": sid})
    assert r["error"]["code"] == "conflict"  # no recording, the gate holds


@pytest.mark.parametrize("stop", ["recording-completed", "recording-failed"])
async def test_a_party_whose_twilio_recording_stops_pauses_the_act(
    make_server: MakeServer, twilio_api: TwilioStandIn, stop: str
) -> None:
    """PROTOCOL §5 with a hosted room: when a party's video recording stops
    during the call (it left the room, or the recording failed), the act
    pauses, and resumes once a recording of that party runs again; the
    record keeps every track stored (a failed one superseded by the party's
    next recording does not fail it)."""
    h = await twilio_server(make_server, twilio_api)
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    room = {"RoomSid": "RM" + "3" * 32, "RoomName": sid, "AccountSid": SID}

    def rec(n: int, who: str) -> dict[str, str]:
        track = {"RecordingSid": f"RT{n:032d}", "ParticipantIdentity": who, "Type": "video"}
        return {**room, **track, "Duration": str(10 * n)}

    async def callback(params: dict[str, str], event: str) -> None:
        assert await post_callback(h, {**params, "StatusCallbackEvent": event}) == 204

    await callback(rec(1, "c1"), "recording-started")
    await callback(rec(2, "n1"), "recording-started")
    for who in ("c1", "n1"):
        await customer.expect("recording.started", user_id=who)
    await notary.call("checks.record", passed_checks(sid))
    # The customer's video leaves the room, or its recording fails, mid-call.
    await callback(rec(1, "c1"), stop)
    for c in (customer, notary):
        paused = await c.expect("session.paused")
        assert paused["data"] == {"reason": "recording", "user_id": "c1"}
    refused = await customer.request("act.sign", {"session_id": sid, "signature": "c2ln"})
    assert refused["error"]["code"] == "conflict" and "paused" in refused["error"]["message"]
    await callback(rec(1, "c1"), stop)  # a duplicate changes nothing
    # Back in the room: a new recording of the customer runs, the act resumes.
    await callback(rec(3, "c1"), "recording-started")
    await customer.expect("recording.started", user_id="c1")
    for c in (customer, notary):
        await c.expect("session.resumed")
    await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
    await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
    await notary.call("video.end", {"session_id": sid})
    # After the call, tracks completing is the room closing, not a pause.
    for n, who in ((2, "n1"), (3, "c1")):
        await callback(rec(n, who), "recording-completed")
    await callback(room, "room-ended")
    ready = (await customer.expect("recording.ready", timeout=20))["data"]
    assert len(ready["tracks"]) == (3 if stop == "recording-completed" else 2)
    assert rec(3, "c1")["RecordingSid"] in ready["url"]  # the customer's longest track
    await notary.call("session.notarize", {"session_id": sid})
    await customer.expect("session.notarized")
    names = [e["name"] for e in customer.events if e.get("topic") == f"session:{sid}"]
    assert names.count("session.paused") == 1 and names.count("session.resumed") == 1


async def test_the_room_ending_under_the_call_pauses_it_for_good(
    make_server: MakeServer, twilio_api: TwilioStandIn
) -> None:
    """The hosted room ends during the call (its maximum duration, closed
    from Twilio's console), here after this process restarted (its view of
    the room lost): no one is in view any more, so the act pauses, and late
    news of recordings in the ended room does not resume it; it ends FAILED
    at the pause timeout, visibly."""
    h = await twilio_server(make_server, twilio_api, pause_timeout_s=2)
    video = h.services.video
    assert video is not None
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    room = {"RoomSid": "RM" + "3" * 32, "RoomName": sid, "AccountSid": SID}

    def rec(n: int, who: str) -> dict[str, str]:
        return {**room, "RecordingSid": f"RT{n:032d}", "ParticipantIdentity": who, "Type": "video"}

    for n, who in ((1, "c1"), (2, "n1")):
        started = {**rec(n, who), "StatusCallbackEvent": "recording-started"}
        assert await post_callback(h, started) == 204
        await customer.expect("recording.started", user_id=who)
    video.rooms.clear()  # as after a restart of this process
    assert await post_callback(h, {**room, "StatusCallbackEvent": "room-ended"}) == 204
    for c in (customer, notary):
        paused = await c.expect("session.paused")
        assert paused["data"] == {"reason": "recording"}
    refused = await notary.request("checks.record", passed_checks(sid))
    assert refused["error"]["code"] == "conflict"
    for n, who in ((3, "c1"), (4, "n1")):  # news arriving late from the ended room
        late = {**rec(n, who), "StatusCallbackEvent": "recording-started"}
        assert await post_callback(h, late) == 204
    for c in (customer, notary):
        failed = await c.expect("session.state", state="FAILED", timeout=20)
        assert failed["data"]["reason"] == "party_lost"
    names = [e["name"] for e in customer.events if e.get("topic") == f"session:{sid}"]
    assert "session.resumed" not in names and names.count("recording.started") == 2


async def test_no_recording_within_the_ready_timeout_fails_the_act(
    make_server: MakeServer, twilio_api: TwilioStandIn
) -> None:
    # PROTOCOL §5: with ENF_RECORDING=required, no recording.ready within
    # ENF_RECORDING_READY_TIMEOUT_S after video.end: FAILED recording_failed.
    h = await twilio_server(make_server, twilio_api, recording_ready_timeout_s=1.0)
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    await notary.call("video.end", {"session_id": sid})  # and Twilio never calls back
    for c in (customer, notary):
        state = await c.expect("session.state", state="FAILED", timeout=10)
        assert (state["data"]["prev"], state["data"]["reason"]) == (
            "VIDEO_COMPLETED",
            "recording_failed",
        )
    snap = (await notary.call("session.join", {"session_id": sid}))["session"]
    assert (snap["state"], snap["reason"], snap["recording"]) == (
        "FAILED",
        "recording_failed",
        None,
    )


async def test_video_start_again_gives_the_same_settings_with_a_fresh_token(
    make_server: MakeServer, twilio_api: TwilioStandIn
) -> None:
    h = await twilio_server(make_server, twilio_api)
    customer, notary, sid = await assigned_session(h)
    started = await in_the_call(customer, notary, sid)
    again = await notary.call("video.start", {"session_id": sid})
    assert {k: v for k, v in again.items() if k != "token"} == {
        k: v for k, v in started.items() if k != "token"
    }

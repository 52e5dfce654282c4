"""Media against the real server: two aiortc peers through our signaling, the
recorder worker, storage, recording links, and a recorder killed mid-call."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import av
import pytest

from core.links import sign_path
from tests.conftest import MakeServer
from tests.flows import (
    assigned_session,
    eventually,
    http_call,
    in_the_call,
    passed_checks,
    sign_and_seal,
    user_id,
)
from tests.media_peers import (
    Party,
    media_seconds,
    parties_closed,
    record_then_end,
    recording_both,
    video_session,
)
from tests.served import Served


def started(p: Party) -> float:
    assert p.recording_since is not None
    return p.recording_since


async def test_two_peers_and_the_recorder_produce_a_recording(
    make_server: MakeServer, tmp_path: Path
) -> None:
    h = await make_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    async with parties_closed(c, n):
        await recording_both(customer)
        assert "video" in c.received and "video" in n.received  # peer to peer, both ways
        await sign_and_seal(customer, notary, sid)
        reply = await notary.request("session.notarize", {"session_id": sid})
        assert reply["error"]["code"] == "conflict"  # still in the call
        await asyncio.sleep(3)
        await notary.call("video.end", {"session_id": sid})
        ended = time.monotonic()
        call_s = {user_id(p.client): ended - started(p) for p in (c, n)}
    ready = (await customer.expect("recording.ready", timeout=60))["data"]
    assert len(ready["sha256"]) == 64 and ready["bytes"] > 0
    assert {t["user_id"] for t in ready["tracks"]} == {"c1", "n1"}
    for t in ready["tracks"]:
        path = Path(urlparse(t["url"]).path)
        size = (await asyncio.to_thread(path.stat)).st_size
        assert path.is_relative_to(tmp_path) and size == t["bytes"]
        seconds = media_seconds(path)
        assert abs(seconds - call_s[t["user_id"]]) < 1.0, (t["user_id"], seconds, call_s)
    # The gate opens: notarize needs recording.ready (ENF_RECORDING=required).
    await notary.call("session.notarize", {"session_id": sid})
    await customer.expect("session.notarized")

    # The link works for a participant, and not once it is tampered with.
    recording = f"/v1/sessions/{sid}/recording"
    status, link = await http_call(h, "GET", recording, h.token("c1", "customer"))
    assert status == 200 and link["expires_at"]
    async with aiohttp.ClientSession() as s, s.get(link["url"]) as r:  # bytes: read as such
        body = await r.read()
        assert r.status == 200 and len(body) == ready["bytes"]
    status, refused = await http_call(h, "GET", link["url"].replace("expires=", "expires=1"))
    assert status == 403 and refused["error"]["code"] == "forbidden"
    # Past its expiry, a correctly signed link is refused too.
    name = ready["url"].rsplit("/", 1)[-1]
    old, _ = sign_path(h.services.jwt_secret, f"/v1/recordings/{sid}/{name}", ttl_s=-1)
    status, refused = await http_call(h, "GET", old)
    assert status == 403 and "expired" in refused["error"]["message"]
    status, refused = await http_call(h, "GET", recording, h.token("c9", "customer"))
    assert status == 404 and refused["error"]["code"] == "not_found"


async def test_signaling_bad_input(make_server: MakeServer) -> None:
    h = await make_server(recording="required")
    customer, notary, sid = await assigned_session(h)
    sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 0\r\n"
    # Outside VIDEO_IN_PROGRESS.
    r = await customer.request(
        "signal", {"session_id": sid, "to": "n1", "kind": "offer", "sdp": sdp}
    )
    assert r["error"]["code"] == "conflict"
    await in_the_call(customer, notary, sid)
    for data, code in (
        ({"to": "n1", "kind": "offer", "sdp": "hello"}, "bad_request"),
        ({"to": "n1", "kind": "ice"}, "bad_request"),
        ({"to": "someone", "kind": "offer", "sdp": sdp}, "not_found"),
        ({"to": "recorder", "kind": "answer", "sdp": sdp}, "bad_request"),
        ({"to": "recorder", "kind": "offer", "sdp": sdp}, "bad_request"),  # unusable SDP
    ):
        r = await customer.request("signal", {"session_id": sid, **data})
        assert r["error"]["code"] == code, (data, r)
    # An offer of 20,000 characters, six times that once JSON-escaped: more than
    # a default line reader takes. It is refused; the worker lives on.
    huge = "v=0\r\n" + "\u00e9" * 20000 + "\nm=audio 9 UDP 0\r\n"
    assert len(huge) <= 32768
    media = h.services.media
    assert media is not None
    pid = media.pid
    r = await customer.request(
        "signal", {"session_id": sid, "to": "recorder", "kind": "offer", "sdp": huge}
    )
    assert r["ok"] is False and r["error"]["code"] == "bad_request", r  # bad input, §8
    worker = media._proc
    assert media.pid == pid and worker is not None and worker.returncode is None
    stranger = await h.client("c9", "customer")
    r = await stranger.request(
        "signal", {"session_id": sid, "to": "n1", "kind": "offer", "sdp": sdp}
    )
    assert r["error"]["code"] == "not_found"
    # Still serving: a ping, and the session goes on.
    assert await customer.call("ping")


@pytest.mark.expects_server_errors("the recorder worker is SIGKILLed: its exit is logged")
async def test_a_recorder_killed_mid_call_pauses_the_act_until_both_are_recorded_again(
    make_server: MakeServer,
) -> None:
    h = await make_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    c2, n2 = Party(customer, sid), Party(notary, sid)
    async with parties_closed(c, n, c2, n2):
        await recording_both(customer)
        await notary.call("checks.record", passed_checks(sid))
        media = h.services.media
        assert media is not None and media.pid is not None
        # Killed once more than a second of each party's media is on disk.
        await on_disk(media.work_dir / sid, 1.2)
        os.kill(media.pid, signal.SIGKILL)
        failed = (await customer.expect("recording.failed", timeout=20))["data"]
        paused = await notary.expect("session.paused", timeout=20)
        assert paused["data"] == {"reason": "recording"}
        r = await customer.request("act.sign", {"session_id": sid, "signature": "c2ln"})
        assert r["error"]["code"] == "conflict" and "recording stopped" in r["error"]["message"]
        # The parties offer their media to the new worker: the act resumes.
        await asyncio.gather(c2.call_recorder(), n2.call_recorder())
        await recording_both(customer)
        await notary.expect("session.resumed", timeout=20)
        await sign_and_seal(customer, notary, sid)
        await asyncio.sleep(1)
        await notary.call("video.end", {"session_id": sid})
    assert "died" in failed["reason"]
    assert failed["tracks"], "the partial recording was not kept"
    for t in failed["tracks"]:
        assert media_seconds(Path(urlparse(t["url"]).path)) > 1.0  # readable, as recorded
    ready = (await customer.expect("recording.ready", timeout=60))["data"]
    # Both workers' files, each party's in two parts.
    assert sorted(Path(urlparse(t["url"]).path).name for t in ready["tracks"]) == [
        "c1.mkv",
        "c1.part1.mkv",
        "n1.mkv",
        "n1.part1.mkv",
    ]
    await notary.call("session.notarize", {"session_id": sid})
    notarized = await customer.expect("session.notarized", timeout=30)
    await _envelope_attests_the_stored_files(h, sid, notarized["data"]["envelope_id"], ready)
    await _recording_download_is_audited(h, sid)


async def on_disk(folder: Path, seconds: float, timeout: float = 60) -> None:
    """Until both parties' first files (c1.mkv, n1.mkv) hold `seconds` of media."""

    def written() -> bool:
        try:
            return all(media_seconds(folder / f"{u}.mkv") > seconds for u in ("c1", "n1"))
        except (OSError, AssertionError, av.error.FFmpegError):  # not there, or no header yet
            return False

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(written):
        assert time.monotonic() < deadline, f"less than {seconds} s of media in {folder}"
        await asyncio.sleep(0.2)


async def _envelope_attests_the_stored_files(
    h: Served, sid: str, envelope_id: str, ready: dict[str, Any]
) -> None:
    """The envelope's recording hashes are the SHA-256 of the stored files."""
    status, signed = await http_call(
        h, "GET", f"/v1/envelopes/{envelope_id}", h.token("c1", "customer")
    )
    assert status == 200, signed
    session = signed["envelope"]["session"]

    def sha256_of(url: str) -> str:
        return hashlib.sha256(Path(urlparse(url).path).read_bytes()).hexdigest()

    assert session["recording_sha256"] == ready["sha256"]
    assert session["recording_sha256"] == await asyncio.to_thread(sha256_of, ready["url"])
    attested = {t["url"]: t["sha256"] for t in session["recording_tracks"]}
    assert attested == {t["url"]: t["sha256"] for t in ready["tracks"]}
    for url, digest in attested.items():
        assert digest == await asyncio.to_thread(sha256_of, url)


async def _recording_download_is_audited(h: Served, sid: str) -> None:
    status, link = await http_call(
        h, "GET", f"/v1/sessions/{sid}/recording", h.token("c1", "customer")
    )
    assert status == 200, link
    async with aiohttp.ClientSession() as s, s.get(link["url"]) as r:
        assert r.status == 200 and await r.read()
    admin = h.token("admin-1", "admin")
    wanted = {"GET /v1/sessions/{id}/recording", "GET /v1/recordings/{id}/{name}"}
    deadline = time.monotonic() + 10
    while True:
        status, body = await http_call(h, "GET", "/v1/audit?format=json", admin)
        assert status == 200, body
        seen = {e["action"] for e in body["entries"] if e.get("resource_id") == sid}
        if wanted <= seen or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert wanted <= seen, seen


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client (made in a thread: boto3 reads its data files to make one)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def s3_read(s3: Any, bucket: str, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


async def test_recordings_on_s3_with_expiring_links(
    make_server: MakeServer, s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = await asyncio.to_thread(s3_client, s3_endpoint)
    await asyncio.to_thread(s3.create_bucket, Bucket="enf-recordings")
    h = await make_server(
        recording="required",
        recordings_url="s3://enf-recordings/prod",
        s3_endpoint_url=s3_endpoint,
    )
    customer, notary, sid, c, n = await video_session(h)
    async with parties_closed(c, n):
        await record_then_end(customer, notary, sid, 2)
    ready = (await customer.expect("recording.ready", timeout=60))["data"]
    assert ready["url"].startswith(f"s3://enf-recordings/prod/{sid}/")
    for t in ready["tracks"]:
        key = t["url"].removeprefix("s3://enf-recordings/")
        head = await asyncio.to_thread(s3.head_object, Bucket="enf-recordings", Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        body = await asyncio.to_thread(s3_read, s3, "enf-recordings", key)
        assert hashlib.sha256(body).hexdigest() == t["sha256"] and len(body) == t["bytes"]
        local = tmp_path / f"{t['user_id']}.mkv"
        await asyncio.to_thread(local.write_bytes, body)
        assert media_seconds(local) > 1.0

    status, link = await http_call(h, "GET", f"/v1/sessions/{sid}/recording", h.token("n1", "enp"))
    assert status == 200, link
    async with aiohttp.ClientSession() as s, s.get(link["url"]) as r:  # bytes: read as such
        assert r.status == 200 and len(await r.read()) == ready["bytes"]
        # The link expires in 15 minutes (S3 enforces it; moto does not check).
        query = parse_qs(urlparse(link["url"]).query)
        if "X-Amz-Expires" in query:
            assert query["X-Amz-Expires"] == ["900"]
        else:
            assert abs(int(query["Expires"][0]) - (time.time() + 900)) < 30
        assert query.get("Signature") or query.get("X-Amz-Signature")


async def test_large_recordings_go_to_s3_in_parts(s3_endpoint: str, tmp_path: Path) -> None:
    from media.storage import CHUNK, S3Storage

    s3 = await asyncio.to_thread(s3_client, s3_endpoint)
    await asyncio.to_thread(s3.create_bucket, Bucket="enf-big")
    data = os.urandom(2 * CHUNK + 12345)
    local = tmp_path / "big.mkv"
    await asyncio.to_thread(local.write_bytes, data)
    stored = await S3Storage("enf-big", "p", s3_endpoint).store(local, "s/big.mkv")
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.bytes == len(data)
    head = await asyncio.to_thread(s3.head_object, Bucket="enf-big", Key="p/s/big.mkv")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ServerSideEncryption"] == "AES256"


async def test_a_party_whose_media_stops_reaching_the_recorder_pauses_the_act(
    make_server: MakeServer,
) -> None:
    h = await make_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    c2 = Party(customer, sid)
    async with parties_closed(c, n, c2):
        await recording_both(customer)
        assert c.to_recorder is not None
        await c.to_recorder.close()  # the customer's media to the recorder ends
        failed = await notary.expect("recording.failed", user_id="c1", timeout=40)
        assert failed["data"]["reason"] == "no media from c1"
        paused = await notary.expect("session.paused")
        assert paused["data"] == {"reason": "recording", "user_id": "c1"}
        r = await notary.request("checks.record", passed_checks(sid))
        assert r["error"]["code"] == "conflict", r
        await c2.call_recorder()
        await customer.expect("recording.started", user_id="c1", timeout=20)
        await notary.expect("session.resumed", timeout=20)
        await sign_and_seal(customer, notary, sid)


async def test_a_call_cancelled_midway_stops_its_recording(make_server: MakeServer) -> None:
    h = await make_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    media = h.services.media
    assert media is not None
    async with parties_closed(c, n):
        await recording_both(customer)
        assert sid in media.sessions
        await customer.call("session.cancel", {"session_id": sid, "reason": "changed my mind"})
        await notary.expect("session.state", state="CANCELLED")
        # The recorder lets go of the session (its files are stored, not journaled).
        await eventually(lambda: sid not in media.sessions, 20)

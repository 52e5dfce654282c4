"""What the server writes from its data is its owner's only, from the first
moment: a WebRTC recording (the recorder worker's files and the stored
copy), a Twilio recording (the download and the stored copy) and the keys it
generates: files 0600, folders 0700, under the usual umask (022)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import MakeServer
from tests.flows import assigned_session, join_both, sign_and_seal
from tests.functional.test_twilio import (
    TwilioStandIn,
    post_callback,
)
from tests.media_peers import parties_closed, record_then_end, video_session


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most servers run with: a file made with default modes is
    readable by everyone (0644), a folder listable by everyone (0755)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and of everything under it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> dict[str, int]:
    """Every folder under (and with) `root` is 0700, every file 0600."""
    found = modes(root)
    for name, mode in found.items():
        wanted = 0o700 if (root / name).is_dir() else 0o600
        assert mode == wanted, f"{root / name}: {oct(mode)}, not {oct(wanted)}"
    return found


async def test_a_webrtc_recording_and_the_recorders_files_are_private(
    make_server: MakeServer, tmp_path: Path, usual_umask: None
) -> None:
    h = await make_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    async with parties_closed(c, n):
        await record_then_end(customer, notary, sid, 0)
    ready = (await customer.expect("recording.ready", timeout=60))["data"]
    stored = [Path(urlparse(t["url"]).path) for t in ready["tracks"]]
    assert stored and all(p.is_relative_to(tmp_path / "recordings") for p in stored)
    work = await asyncio.to_thread(assert_private, tmp_path / "recorder")
    assert {f"{sid}/c1.mkv", f"{sid}/n1.mkv"} <= set(work)
    kept = await asyncio.to_thread(assert_private, tmp_path / "recordings")
    assert {str(p.relative_to(tmp_path / "recordings")) for p in stored} <= set(kept)
    # The keys the server generated are its owner's only too.
    for name in ("pii.key", "signing_key.pem"):
        mode = (await asyncio.to_thread((tmp_path / name).stat)).st_mode
        assert stat.S_IMODE(mode) == 0o600, name


async def test_a_twilio_recording_is_private_as_downloaded_and_as_stored(
    make_server: MakeServer, twilio_api: TwilioStandIn, tmp_path: Path, usual_umask: None
) -> None:
    h = await make_server(
        recording="required",
        video_provider="twilio",
        twilio_api_base=str(twilio_api.server.make_url("/")),
    )
    video = h.services.video
    assert video is not None
    video.callback_url = h.url("/webhooks/twilio/status")
    customer, notary, sid = await assigned_session(h)
    await join_both(customer, notary, sid)
    await notary.call("video.start", {"session_id": sid})
    room = {"RoomSid": "RM" + "3" * 32, "RoomName": sid}
    rec = {**room, "RecordingSid": "RT" + "4" * 32, "ParticipantIdentity": "c1", "Type": "video"}
    rec_n = {**rec, "RecordingSid": "RT" + "5" * 32, "ParticipantIdentity": "n1"}
    for who, track in (("c1", rec), ("n1", rec_n)):  # each party's video recorded
        assert await post_callback(h, {**track, "StatusCallbackEvent": "recording-started"}) == 204
        await customer.expect("recording.started", user_id=who)
    await sign_and_seal(customer, notary, sid)
    await notary.call("video.end", {"session_id": sid})
    for track in (rec, rec_n):
        done = {**track, "StatusCallbackEvent": "recording-completed"}
        assert await post_callback(h, done) == 204
    assert await post_callback(h, {**room, "StatusCallbackEvent": "room-ended"}) == 204
    ready = (await customer.expect("recording.ready", timeout=20))["data"]
    assert ready["bytes"] > 0
    downloaded = await asyncio.to_thread(assert_private, tmp_path / "twilio")
    assert f"{sid}/c1-{rec['RecordingSid']}.mkv" in downloaded
    kept = await asyncio.to_thread(assert_private, tmp_path / "recordings")
    assert f"{sid}/c1-{rec['RecordingSid']}.mkv" in kept

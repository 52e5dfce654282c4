"""What a hosted room's recording callbacks tell the session (media.twilio_video):
each party's first recording, and a party's last running recording ending
during the call (its media lost), once; nothing for recordings it never saw
start (from before a restart) or once the room has ended."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.messages import Message
from media.storage import FileStorage
from media.twilio_video import Credentials, TwilioVideo

Told = list[tuple[str, Message]]


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[tuple[TwilioVideo, Told]]:
    told: Told = []
    video = TwilioVideo(
        Credentials("AC1", "token", "SK1", "secret"),
        FileStorage(tmp_path / "rec"),
        lambda a, m: told.append((a, m)),
        tmp_path / "work",
        callback_url="http://127.0.0.1:1/webhooks/twilio/status",
        api_base="http://127.0.0.1:1",  # downloads fail at once: not what is tested
    )
    try:
        yield video, told
    finally:
        await video.stop()


def _cb(video: TwilioVideo, event: str, rec: str | None = None, who: str | None = None) -> None:
    params = {"StatusCallbackEvent": event, "RoomName": "s1", "RoomSid": "RM1"}
    if rec is not None:
        params["RecordingSid"] = rec
    if who is not None:
        params["ParticipantIdentity"] = who
    video.on_callback(params)


def _said(told: Told) -> list[tuple[str, str | None]]:
    return [(m.kind, m.data.get("user_id")) for _, m in told]


async def test_a_party_is_lost_when_its_last_recording_ends(
    room: tuple[TwilioVideo, Told],
) -> None:
    video, told = room
    _cb(video, "recording-started", "RTa1", "c1")  # the customer's audio
    _cb(video, "recording-started", "RTv1", "c1")  # and video
    _cb(video, "recording-started", "RTv1", "c1")  # a duplicate
    _cb(video, "recording-started", "RTv2", "n1")
    assert _said(told) == [("recording_started", "c1"), ("recording_started", "n1")]
    _cb(video, "recording-completed", "RTv1", "c1")  # its audio still runs
    assert len(told) == 2
    _cb(video, "recording-failed", "RTa1", "c1")
    _cb(video, "recording-failed", "RTa1", "c1")  # a duplicate
    assert _said(told)[2:] == [("recording_failed", "c1")]
    assert told[2][1].data["tracks"] == [] and "failed" in told[2][1].data["reason"]
    _cb(video, "recording-started", "RTv3", "c1")  # back in the room
    assert _said(told)[3:] == [("recording_started", "c1")]


async def test_nothing_is_lost_for_recordings_not_seen_starting_or_after_the_room(
    room: tuple[TwilioVideo, Told],
) -> None:
    video, told = room
    # Started before this process (a restart): not known running, so not a loss.
    _cb(video, "recording-completed", "RTold", "c1")
    assert told == []
    _cb(video, "recording-started", "RTv1", "c1")
    _cb(video, "room-ended")
    _cb(video, "recording-completed", "RTv1", "c1")  # the room closing its tracks
    assert ("recording_failed", "c1") not in _said(told)

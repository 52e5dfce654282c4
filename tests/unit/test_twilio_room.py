"""A hosted room's bookkeeping (media.twilio_rooms): what its recording
callbacks tell the session. Each party's first video recording; a party's
last running video recording ending during the call (its media lost), once;
nothing judged where the room is not wholly known (seen first through a
callback) or once it has ended; a failure superseded by a later recording
of the same party does not fail the room's record."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.messages import Message
from media.twilio_rooms import Room
from media.twilio_video import TwilioVideo
from tests.twilio_local import Told, local_twilio_video

AUDIO, VIDEO = False, True


def lost(reason: str, who: str) -> dict[str, object]:
    return {"reason": f"twilio: the recording of {who} {reason}", "user_id": who, "tracks": []}


def test_a_party_is_lost_when_its_last_video_recording_ends() -> None:
    room = Room("s1", "RM1")
    assert room.runs("A1", "c1", AUDIO) is None  # audio alone puts no one in view
    assert room.runs("V1", "c1", VIDEO) == {"user_id": "c1"}
    assert room.runs("V2", "c1", VIDEO) is None  # a second video track (a screen)
    assert room.runs("V3", "n1", VIDEO) == {"user_id": "n1"}
    assert room.stops("V2", "c1", VIDEO, failed=False) is None  # the camera still runs
    assert room.stops("V1", "c1", VIDEO, failed=False) == lost("stopped", "c1")  # audio runs on
    assert room.stops("V1", "c1", VIDEO, failed=False) is None  # a duplicate
    assert room.stops("A1", "c1", AUDIO, failed=True) is None  # audio: not a view
    assert room.runs("V4", "c1", VIDEO) == {"user_id": "c1"}  # back in the room
    assert room.failures() == {"A1"}  # its audio not recorded again
    assert room.runs("A2", "c1", AUDIO) is None
    assert room.failures() == set()


def test_a_failure_covered_by_a_recording_running_on_is_superseded() -> None:
    room = Room("s1", "RM1")
    room.runs("V1", "c1", VIDEO)
    room.runs("V3", "c1", VIDEO)  # the party's next recording started first
    assert room.stops("V1", "c1", VIDEO, failed=True) is None  # still in view
    assert room.failures() == set()
    assert room.end() and not room.end()  # news once
    assert room.runs("V4", "c1", VIDEO) is None  # late: no one is in view in a room gone


def test_a_failure_not_seen_starting_is_a_loss_once() -> None:
    room = Room("s1", "RM1")
    assert room.runs("V1", "n1", VIDEO) == {"user_id": "n1"}
    assert room.stops("V2", "c1", VIDEO, failed=True) == lost("failed", "c1")
    assert room.stops("V2", "c1", VIDEO, failed=True) is None
    assert room.stops("V9", "c1", VIDEO, failed=False) is None  # completed, never seen: nothing


def test_a_failure_superseded_by_a_later_recording_of_the_party_does_not_fail_the_room() -> None:
    room = Room("s1", "RM1")
    room.runs("V1", "c1", VIDEO)
    room.runs("V2", "n1", VIDEO)
    assert room.stops("V1", "c1", VIDEO, failed=True) == lost("failed", "c1")
    assert room.failures() == {"V1"}
    assert room.runs("V3", "c1", VIDEO) == {"user_id": "c1"}
    assert room.failures() == set()
    room.stops("V2", "n1", VIDEO, failed=True)  # n1 not recorded again: the room failed
    assert room.failures() == {"V2"}


def test_nothing_is_judged_in_a_room_not_wholly_known_or_after_it_ended() -> None:
    partial = Room("s1", "RM1", partial=True)  # this process restarted mid-call
    assert partial.runs("V5", "c1", VIDEO) == {"user_id": "c1"}  # a screen shared since
    assert partial.stops("V5", "c1", VIDEO, failed=False) is None  # its camera may still run
    assert partial.stops("V1", "c1", VIDEO, failed=True) is None
    assert partial.failures() == {"V1"}  # the room's report still says it
    ended = Room("s1", "RM1")
    ended.runs("V1", "c1", VIDEO)
    ended.ended = True
    assert ended.stops("V1", "c1", VIDEO, failed=False) is None  # the room closing its tracks


async def test_callbacks_reach_the_session_as_the_room_says(tmp_path: Path) -> None:
    told: Told = []
    video = local_twilio_video(tmp_path, told)
    video.rooms["s1"] = Room("s1", "RM1")  # as create_room makes it
    try:
        await _callbacks(video, told)
    finally:
        await video.stop()


async def _callbacks(video: TwilioVideo, told: list[tuple[str, Message]]) -> None:
    base = {"RoomName": "s1", "RoomSid": "RM1"}
    for event, rec, who, kind in (
        ("recording-started", "RTa", "c1", "audio"),
        ("recording-started", "RTv", "c1", "video"),
        ("recording-started", "RTv", "c1", "video"),
        ("recording-failed", "RTv", "c1", "video"),
    ):
        video.on_callback(
            {
                **base,
                "StatusCallbackEvent": event,
                "RecordingSid": rec,
                "ParticipantIdentity": who,
                "Type": kind,
            }
        )
    said = [(a, m.kind, m.data.get("user_id")) for a, m in told]
    assert said == [
        ("session:s1", "recording_started", "c1"),
        ("session:s1", "recording_failed", "c1"),
    ]
    # Another room of the session (one a retried video.start left behind): ignored.
    video.on_callback({**base, "RoomSid": "RM2", "StatusCallbackEvent": "room-ended"})
    assert video.rooms["s1"].room_sid == "RM1" and not video.rooms["s1"].ended
    # Back in view, then the room ends under the call: a loss for each party in view.
    video.on_callback(
        {**base, "StatusCallbackEvent": "recording-started", "RecordingSid": "RTw"}
        | {"ParticipantIdentity": "c1", "Type": "video"}
    )
    video.on_callback({**base, "StatusCallbackEvent": "room-ended"})
    video.on_callback({**base, "StatusCallbackEvent": "room-ended"})  # a duplicate
    again = [(m.kind, m.data.get("user_id")) for _, m in told[2:]]
    assert again[:2] == [("recording_started", "c1"), ("room_ended", None)]
    # A callback of a room first seen through callbacks (a restart) makes a partial room.
    video.on_callback({"RoomName": "s2", "RoomSid": "RM7", "StatusCallbackEvent": "room-ended"})
    assert video.rooms["s2"].partial


async def test_the_room_report_waits_for_a_download_tried_again(tmp_path: Path) -> None:
    told: Told = []
    video = local_twilio_video(tmp_path, told)  # its downloads fail: nothing listens there
    video.rooms["s1"] = Room("s1", "RM1")
    track = {"RoomName": "s1", "RoomSid": "RM1", "RecordingSid": "RTv", "ParticipantIdentity": "c1"}
    try:
        video.on_callback({**track, "StatusCallbackEvent": "recording-started"})
        video.on_callback({**track, "StatusCallbackEvent": "recording-completed"})
        await asyncio.gather(*video._tasks)
        assert video.rooms["s1"].failed == {"RTv"}
        video.on_callback({**track, "StatusCallbackEvent": "recording-completed"})  # again
        assert video.rooms["s1"].failed == set()  # the new try decides
        video.on_callback({"RoomName": "s1", "RoomSid": "RM1", "StatusCallbackEvent": "room-ended"})

        def reports() -> list[Message]:  # the room's, not a party's loss
            return [m for _, m in told if m.kind == "recording_failed" and "user_id" not in m.data]

        assert reports() == []  # the report waits for the try
        await asyncio.gather(*video._tasks)
        assert len(reports()) == 1  # it failed again
    finally:
        await video.stop()

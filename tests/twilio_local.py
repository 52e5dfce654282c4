"""A `TwilioVideo` in this process with no Twilio behind it: its REST calls
and downloads go to a closed loopback port (what is tested is the callbacks'
bookkeeping), and what it tells the session actors is kept in a list."""

from __future__ import annotations

from pathlib import Path

from core.messages import Message
from media.storage import FileStorage
from media.twilio_video import Credentials, TwilioVideo

Told = list[tuple[str, Message]]


def local_twilio_video(tmp_path: Path, told: Told) -> TwilioVideo:
    return TwilioVideo(
        Credentials("AC1", "token", "SK1", "secret"),
        FileStorage(tmp_path / "rec"),
        lambda a, m: told.append((a, m)),
        tmp_path / "work",
        callback_url="http://127.0.0.1:1/webhooks/twilio/status",
        api_base="http://127.0.0.1:1",
    )

"""Twilio Video (`ENF_VIDEO_PROVIDER=twilio`): Twilio carries and records the
call; this server creates the room, hands out access tokens, follows the
room's status callbacks and keeps the recordings.

- `video.start` creates a `group` room named after the session, recording
  every participant on connect, with its status callback pointing at
  `/webhooks/twilio/status`; each participant gets an access token with a
  `VideoGrant` for that room only (identity = user id, short TTL).
- Callbacks are checked with Twilio's `RequestValidator` (403 otherwise) and
  are idempotent: duplicates and out-of-order deliveries change nothing.
  `recording-started` → `recording.started` (each party's first video
  recording); each `recording-completed` track is downloaded (streamed,
  hashed) into `ENF_RECORDINGS_URL`; once the room has ended and every
  started track is stored → `recording.ready`, or `recording.failed` when a
  track failed (and was not superseded: `media.twilio_rooms`).
- During the call, a party whose last running video recording completes or
  fails (it left the room, its camera stopped) is reported as its recording
  lost (`recording.failed` with its `user_id`), and the room's end as every
  party's (`room_ended`): with `ENF_RECORDING=required` the act pauses until
  a video recording of that party runs again (PROTOCOL §5).
- REST calls go through the library's async HTTP client; `ENF_TWILIO_API_BASE`
  points them (and media downloads) at another base URL, for a regional
  proxy or a local stand-in of Twilio's API.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VideoGrant
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from yarl import URL

from config.twilio import rebase, twilio_http_client
from core.ids import is_identifier, session_address
from core.messages import Message
from media.recorder import Tell
from media.storage import FileStorage, S3Storage, contained
from media.twilio_rooms import Room
from persistence.keys import open_private

logger = logging.getLogger(__name__)

TOKEN_TTL_S = 15 * 60
VIDEO_API = "https://video.twilio.com"


@dataclass
class Credentials:
    account_sid: str
    auth_token: str
    api_key: str
    api_secret: str

    @classmethod
    def from_env(cls) -> Credentials:
        names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET")
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise ValueError(f"ENF_VIDEO_PROVIDER=twilio needs {', '.join(missing)}")
        return cls(*(os.environ[n] for n in names))


class TwilioVideo:
    def __init__(
        self,
        creds: Credentials,
        storage: FileStorage | S3Storage,
        tell: Tell,
        work_dir: Path,
        *,
        callback_url: str,
        api_base: str | None = None,
    ) -> None:
        self.creds = creds
        self.storage = storage
        self._tell = tell
        self.work_dir = work_dir
        self.callback_url = callback_url
        self.api_base = api_base
        self.client = Client(
            creds.account_sid, creds.auth_token, http_client=twilio_http_client(api_base)
        )
        self.validator = RequestValidator(creds.auth_token)
        self.rooms: dict[str, Room] = {}  # by session id
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the session actor asks ------------------------------------------------

    async def create_room(self, session_id: str) -> str:
        room = await self.client.video.v1.rooms.create_async(
            unique_name=session_id,
            type="group",
            record_participants_on_connect=True,
            status_callback=self.callback_url,
            status_callback_method="POST",
        )
        # A new room (a retried video.start) starts afresh, known whole.
        self.rooms[session_id] = Room(session_id, room.sid)
        logger.info("twilio room %s created for session %s", room.sid, session_id)
        return str(room.sid)

    def token(self, session_id: str, user_id: str) -> str:
        token = AccessToken(
            self.creds.account_sid,
            self.creds.api_key,
            self.creds.api_secret,
            identity=user_id,
            ttl=TOKEN_TTL_S,
            grants=[VideoGrant(room=session_id)],
        )
        return str(token.to_jwt())

    async def end_room(self, session_id: str) -> None:
        room = self.rooms.get(session_id)
        sid = room.room_sid if room and room.room_sid else session_id
        try:
            await self.client.video.v1.rooms(sid).update_async(status="completed")
        except Exception as exc:  # the room may have ended by itself
            logger.warning("completing twilio room %s: %s", sid, exc)

    # -- callbacks -----------------------------------------------------------------

    def valid(self, url: str, params: dict[str, str], signature: str) -> bool:
        return bool(self.validator.validate(url, params, signature))

    def on_callback(self, p: dict[str, str]) -> None:
        """One status callback (already validated). Idempotent."""
        event = p.get("StatusCallbackEvent", "")
        room = self._room_of(p)
        if room is None:
            return
        rec = p.get("RecordingSid")
        who = p.get("ParticipantIdentity") or None
        if who is not None and not is_identifier(who):
            # Not a user id of ours (identities are): it names no party, and
            # its track is not kept (`_download`), which the room's report says.
            logger.warning("twilio callback with a malformed ParticipantIdentity")
            who = None
        video = p.get("Type") in (None, "", "video")
        actor = session_address(room.session_id)
        if event == "recording-started" and rec:
            if rec not in room.started:  # a duplicate changes nothing
                started = room.runs(rec, who, video)
                if started is not None:
                    self._tell(actor, Message("recording_started", started))
        elif event in ("recording-completed", "recording-failed") and rec:
            failed = event == "recording-failed"
            lost = room.stops(rec, who, video, failed)
            if lost is not None:
                self._tell(actor, Message("recording_failed", lost))
            if failed:
                self._maybe_report(room)
            elif rec not in room.stored and rec not in room.downloading:  # duplicates: once
                room.downloading.add(rec)
                room.failed.discard(rec)  # a download tried again: this one decides
                self._spawn(self._download(room, p))
        elif event == "room-ended":
            if room.end():
                self._tell(actor, Message("room_ended", {"reason": "twilio: the room ended"}))
            self._maybe_report(room)

    def _room_of(self, p: dict[str, str]) -> Room | None:
        """The room a callback is about (None: a name or sid not ours)."""
        session_id = p.get("RoomName", "")
        if not is_identifier(session_id) or session_id in (".", ".."):
            if session_id:
                logger.warning("twilio callback for an unknown room name ignored")
            return None
        if p.get("RecordingSid") and not is_identifier(p["RecordingSid"]):
            logger.warning("twilio callback with a malformed RecordingSid ignored")
            return None
        room = self.rooms.get(session_id)
        room_sid = p.get("RoomSid")
        if room is not None and room_sid and room.room_sid and room_sid != room.room_sid:
            if not room.partial:
                # Another room of the session than the one made here for its
                # call (one a retried video.start left behind): not its record.
                logger.info("twilio callback for room %s, not the session's: ignored", room_sid)
                return None
            room = None  # seen through callbacks only: the later room is taken for the call
        if room is None:
            # Not created by this process (a restart, another gateway): its
            # recordings are not all known (`twilio_rooms`).
            room = self.rooms[session_id] = Room(session_id, room_sid, partial=True)
        return room

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _download(self, room: Room, p: dict[str, str]) -> None:
        rec = p["RecordingSid"]
        url = f"{VIDEO_API}/v1/Recordings/{rec}/Media"
        if self.api_base:
            url = rebase(url, urlsplit(self.api_base))
        ext = "mka" if p.get("Container") == "mka" or p.get("Type") == "audio" else "mkv"
        who = p.get("ParticipantIdentity", "x")
        try:
            # Named after outside input: only inside the session's folder.
            contained(self.work_dir, room.session_id, who, rec)  # each a safe name
            local = self.work_dir / room.session_id / f"{who}-{rec}.{ext}"
            auth = {
                "Authorization": aiohttp.encode_basic_auth(
                    self.creds.account_sid, self.creds.auth_token
                )
            }
            # Recordings can be large: no total limit, but no silent stall either.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                # Twilio answers with a redirect to a pre-signed media URL, which
                # is fetched without our credentials.
                async with s.get(url, headers=auth, allow_redirects=False) as r:
                    if r.status in (301, 302, 303, 307, 308):
                        url = str(r.url.join(URL(r.headers["Location"])))
                    elif r.status != 200:
                        raise RuntimeError(f"media request answered {r.status}")
                async with s.get(url) as r:
                    if r.status != 200:
                        raise RuntimeError(f"media download answered {r.status}")
                    # Disk writes go to a thread, never on the event loop; the
                    # file is private (0600, in 0700 folders) from the start.
                    f = await asyncio.to_thread(open_private, local, replace=True)
                    try:
                        async for chunk in r.content.iter_chunked(1 << 16):
                            await asyncio.to_thread(f.write, chunk)
                    finally:
                        await asyncio.to_thread(f.close)
            stored = await self.storage.store(local, f"{room.session_id}/{local.name}")
        except Exception as exc:
            logger.error("recording %s of %s not kept: %s", rec, room.session_id, exc)
            room.failed.add(rec)
            room.downloading.discard(rec)
            self._maybe_report(room)
            return
        room.downloading.discard(rec)
        room.stored[rec] = {
            "user_id": p.get("ParticipantIdentity"),
            "kind": p.get("Type") or ext,
            "url": stored.url,
            "sha256": stored.sha256,
            "bytes": stored.bytes,
            "duration_s": float(p["Duration"]) if p.get("Duration") else None,
        }
        self._maybe_report(room)

    def _maybe_report(self, room: Room) -> None:
        if room.reported or not room.ended:
            return
        if room.waiting():
            return  # tracks still being completed or downloaded
        room.reported = True
        actor = session_address(room.session_id)
        tracks = list(room.stored.values())
        failed = room.failures()
        if tracks and not failed:
            self._tell(actor, Message("recording_finished", {"tracks": tracks}))
        else:
            # An incomplete recording is not the record of the act: failed,
            # with what was kept.
            reason = (
                f"twilio recording failed ({len(failed)} of {len(room.started)} tracks)"
                if failed
                else "no_media"
            )
            self._tell(actor, Message("recording_failed", {"reason": reason, "tracks": tracks}))

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.client.http_client.close()

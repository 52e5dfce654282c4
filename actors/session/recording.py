"""Reports of the recorder (tells from media.recorder and media.twilio_video):
recording started (per party), finished (its files stored and hashed) or
failed.

With `ENF_RECORDING=required` a failure pauses the act under way (it resumes
when the parties' media reach the recorder again), and after `video.end` a
failure with nothing usable ends the act `FAILED recording_failed`
(PROTOCOL §5). A finished session's journal is closed: reports that arrive
after it ended (the recorder keeping what it had of a failed act) are logged.
"""

from __future__ import annotations

from typing import Any

from actors import lifecycle as L
from actors.session.base import logger
from actors.session.interruptions import Interruptions
from actors.session.state import Event
from core.messages import Message


class RecordingReports(Interruptions):
    def _closed(self, what: str, data: dict[str, Any]) -> bool:
        """True (and logged) when the session cannot take this report."""
        if not self.exists:
            return True
        if self.state["state"] in L.TERMINAL:
            urls = [t.get("url") for t in data.get("tracks") or []]
            logger.info(
                "session %s is %s: recording %s not journaled (files: %s)",
                self.session_id,
                self.state["state"],
                what,
                urls,
            )
            return True
        return False

    async def on_recording_started(self, msg: Message) -> None:
        if self._closed("start", msg.data):
            return
        uid = msg.data.get("user_id")
        users = self.state.get("recording_users") or []
        if self.state.get("recording_started") and (uid is None or uid in users):
            return  # known already (a hosted room reports once)
        await self.commit([("recording.started", {"user_id": uid})])
        await self._maybe_resume()

    async def on_recording_finished(self, msg: Message) -> None:
        if self._closed("result", msg.data):
            return
        tracks = msg.data["tracks"]
        customer = self.state.get("customer_id")
        # The record's face: the customer's longest track with video (a hosted
        # room keeps each track, and a party that left and came back has several).
        own = [t for t in tracks if t["user_id"] == customer] or tracks
        top = max(
            own,
            key=lambda t: (
                t.get("kind") not in ("audio", "mka"),  # a hosted room's audio track
                t.get("duration_s") or 0,
                t.get("bytes") or 0,
            ),
        )
        durations = [t["duration_s"] for t in tracks if t.get("duration_s") is not None]
        ready = {
            "url": top["url"],
            "sha256": top["sha256"],
            "bytes": top["bytes"],
            "duration_s": max(durations) if durations else None,
            "tracks": tracks,
        }
        await self.commit([("recording.ready", ready)])
        self._arm_timers()  # no longer waiting for it
        logger.info("session %s recording ready (%d files)", self.session_id, len(tracks))

    async def on_room_ended(self, msg: Message) -> None:
        """A hosted room ended (media.twilio_video). During the call, every
        party it recorded is lost with it (PROTOCOL §5: the act pauses, and
        cannot resume in a room that is gone: it ends at the pause timeout
        unless it was sealed); after `video.end` it is how the call closes."""
        if self._closed("room end", msg.data) or self.state["state"] != L.VIDEO_IN_PROGRESS:
            return
        users = self.state.get("recording_users") or []
        if not users:
            return
        reason = msg.data.get("reason") or "the call's room ended"
        logger.warning("session %s: %s during the call", self.session_id, reason)
        events: list[Event] = [
            ("recording.failed", {"reason": reason, "tracks": [], "user_id": uid}) for uid in users
        ]
        if self._recording_required():
            events += self._pause("recording")
        await self._commit_with_pause(events)

    async def on_recording_failed(self, msg: Message) -> None:
        if self._closed("failure", msg.data):
            return
        reason = msg.data.get("reason") or "unknown"
        tracks = msg.data.get("tracks") or []
        uid = msg.data.get("user_id")
        if uid is not None and (
            self.state["state"] != L.VIDEO_IN_PROGRESS
            or uid not in (self.state.get("recording_users") or [])
        ):
            return  # one party's media lost outside the call, or not recorded anyway
        if self.ctx.metrics is not None:
            self.ctx.metrics.recorder_failures.inc()
        logger.warning("session %s recording failed: %s", self.session_id, reason)
        failed: dict[str, Any] = {"reason": reason, "tracks": tracks}
        if uid is not None:
            failed["user_id"] = uid
        events: list[Event] = [("recording.failed", failed)]
        if not self._recording_required():
            await self.commit(events)
        elif self.state["state"] == L.VIDEO_IN_PROGRESS:
            await self._commit_with_pause([*events, *self._pause("recording", uid)])
        elif self._awaits_recording() and not any(t.get("bytes") for t in tracks):
            # After video.end, nothing usable: the act cannot be completed.
            await self._end_unfinished(L.FAILED, "recording_failed", events)
        else:
            await self.commit(events)

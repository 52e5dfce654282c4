"""Reports of the recorder (tells from media.recorder and media.twilio_video):
recording started, finished (its files stored and hashed) or failed.
"""

from __future__ import annotations

from actors.session.base import SessionBase, logger
from core.messages import Message


class RecordingReports(SessionBase):
    async def on_recording_started(self, msg: Message) -> None:
        if not self.exists or self.state.get("recording_started"):
            return
        await self.commit([("recording.started", {"user_id": msg.data.get("user_id")})])

    async def on_recording_finished(self, msg: Message) -> None:
        if not self.exists:
            return
        tracks = msg.data["tracks"]
        customer = self.state.get("customer_id")
        top = next((t for t in tracks if t["user_id"] == customer), tracks[0])
        durations = [t["duration_s"] for t in tracks if t.get("duration_s") is not None]
        ready = {
            "url": top["url"],
            "sha256": top["sha256"],
            "bytes": top["bytes"],
            "duration_s": max(durations) if durations else None,
            "tracks": tracks,
        }
        await self.commit([("recording.ready", ready)])
        logger.info("session %s recording ready (%d files)", self.session_id, len(tracks))

    async def on_recording_failed(self, msg: Message) -> None:
        if not self.exists:
            return
        reason = msg.data.get("reason") or "unknown"
        if self.ctx.metrics is not None:
            self.ctx.metrics.recorder_failures.inc()
        await self.commit(
            [("recording.failed", {"reason": reason, "tracks": msg.data.get("tracks") or []})]
        )
        logger.warning("session %s recording failed: %s", self.session_id, reason)

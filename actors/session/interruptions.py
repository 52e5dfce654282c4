"""The unhappy half of the act (PROTOCOL §5).

- **In full view**: `checks.record`, `act.sign` and `act.seal` only while the
  call is live and whole — `VIDEO_IN_PROGRESS`, not paused, every party
  joined and connected, and with `ENF_RECORDING=required` the recording
  running for every party — else `conflict`, naming what is missing.
- **Pause and resume**: a party away past the reconnect grace (or gone by
  `session.leave`), or the recording failing, pauses the act
  (`session.paused`); it resumes (`session.resumed`) once every party is
  back and recorded. A party whose absence paused it re-joins with a token
  issued after it left (identity verified again).
- **Timeouts that end an act**: the join window (`CANCELLED join_window`),
  the pause timeout (`FAILED party_lost`) and the wait for the recording
  after `video.end` (`FAILED recording_failed`). Each writes the
  incomplete-act entry (the refund follows from the move, in the outbox).

Timers are armed from durable timestamps (`assigned_at`, `paused.at`,
`video_ended_at`) after every move and on every activation, so they survive
restarts: recovery activates sessions in these states at start-up.
"""

from __future__ import annotations

from datetime import UTC, datetime

from actors import lifecycle as L
from actors.session.base import logger
from actors.session.ending import EndingRequests
from actors.session.state import Event
from core.clock import parse_iso
from core.errors import ProtocolError
from core.messages import Caller, Message

_NAMES = {"customer": "customer", "enp": "notary"}


def _who(roles: list[str]) -> str:
    names = [f"the {_NAMES.get(r, r)}" for r in roles]
    return " and ".join(names)


def _left_of(at: str, seconds: float) -> float:
    """Seconds until `seconds` after `at` (never negative)."""
    return max(0.0, (parse_iso(at) - datetime.now(UTC)).total_seconds() + seconds)


class Interruptions(EndingRequests):
    # -- in full view -------------------------------------------------------------

    def _recording_required(self) -> bool:
        settings = self.ctx.settings
        return settings.recording == "required" and (
            self.ctx.media is not None or self.ctx.video is not None
        )

    def _not_recorded(self) -> list[str]:
        """Roles of the parties whose media is not being recorded now (empty
        unless the recording is required)."""
        if not self._recording_required():
            return []
        # Per party: the recorder says whose media reaches it; a hosted room's
        # callbacks, whose video recording runs (media.twilio_rooms).
        users = self.state.get("recording_users") or []
        return [p["role"] for uid, p in self.state["participants"].items() if uid not in users]

    def _not_connected(self, caller: Caller | None = None) -> list[str]:
        """Roles of the parties not in the call now: not joined, or with no
        open connection (dropped, within the grace, or not back after a
        restart). The caller of a request is connected: it sent it."""
        return [
            p["role"]
            for uid, p in self.state["participants"].items()
            if not p["present"]
            or not (self.conns.get(uid) or (caller is not None and caller.user_id == uid))
        ]

    def _full_view(self, caller: Caller) -> None:
        """Refuse an act step unless the call is live and whole."""
        self._in_state(L.VIDEO_IN_PROGRESS)
        paused = self.state.get("paused")
        if paused:
            raise ProtocolError(
                "conflict",
                f"the act is paused ({self._pause_cause()}); it resumes when every party"
                " is back in the call and recorded",
            )
        away = self._not_connected(caller)
        if away:
            raise ProtocolError(
                "conflict", f"not in full view: {_who(away)} {_is(away)} not connected"
            )
        unrecorded = self._not_recorded()
        if unrecorded:
            how = (
                "(send the recorder an offer)"
                if self.ctx.media is not None
                else "(its video must be in the call's room)"
            )
            raise ProtocolError(
                "conflict",
                f"not in full view: the recording is not running for {_who(unrecorded)} {how}",
            )

    def _pause_cause(self) -> str:
        paused = self.state.get("paused")
        if not paused:
            return ""
        lost = sorted(self.state.get("lost") or {})
        roles = [self.state["participants"][u]["role"] for u in lost]
        if paused["reason"] == "recording" and not roles:
            return "the recording stopped"
        return f"{_who(roles) or 'a party'} left the call"

    # -- pause and resume ---------------------------------------------------------------

    def _pause(self, reason: str, user_id: str | None = None) -> list[Event]:
        """The pause event, unless the act is not under way or already paused."""
        if self.state["state"] != L.VIDEO_IN_PROGRESS or self.state.get("paused"):
            return []
        data: dict[str, str] = {"reason": reason}
        if user_id is not None:
            data["user_id"] = user_id
        return [("session.paused", data)]

    async def _commit_with_pause(self, events: list[Event]) -> None:
        """Commit `events` (which may hold a pause); arm the pause timeout."""
        was_paused = bool(self.state.get("paused"))
        await self.commit(events)
        if not was_paused and self.state.get("paused"):
            logger.warning(
                "session %s paused: %s",
                self.session_id,
                self._pause_cause(),
                extra={"session_id": self.session_id},
            )
            self.publish_ephemeral(
                self.actor_id,
                "notification",
                {
                    "kind": "act_paused",
                    "session_id": self.session_id,
                    "message": f"The act is paused: {self._pause_cause()}.",
                },
            )
            self._arm_timers()

    async def _maybe_resume(self) -> None:
        """Resume once every party is back, connected and recorded."""
        if self.state["state"] != L.VIDEO_IN_PROGRESS or not self.state.get("paused"):
            return
        if self._not_connected() or self._not_recorded():
            return
        await self.commit([("session.resumed", {})])
        self.cancel_timer("pause")
        logger.info("session %s resumed", self.session_id, extra={"session_id": self.session_id})

    def _check_reverified(self, caller: Caller) -> None:
        """A party gone from a call under way proves its identity again: a
        token issued after it left (PROTOCOL §5)."""
        if self.state["state"] != L.VIDEO_IN_PROGRESS:
            return
        since = (self.state.get("lost") or {}).get(caller.user_id)
        if since is None:
            return
        iat = caller.claims.get("iat")
        if not isinstance(iat, int | float) or iat <= parse_iso(since).timestamp():
            raise ProtocolError(
                "forbidden",
                f"you left the call at {since}: re-join with a token issued after that"
                " (sign in again to verify your identity)",
            )

    # -- timers ---------------------------------------------------------------------------

    def _arm_timers(self) -> None:
        """The timers the current state needs, from durable timestamps."""
        s = self.state
        st = s["state"]
        settings = self.ctx.settings
        if st == L.ENP_ASSIGNED and s.get("assigned_at"):
            left = _left_of(s["assigned_at"], settings.join_window_s)
            self.set_timer("join_window", left, Message("join_window_expired"))
        else:
            self.cancel_timer("join_window")
        paused = s.get("paused")
        if st == L.VIDEO_IN_PROGRESS and paused:
            left = _left_of(paused["at"], settings.pause_timeout_s)
            self.set_timer("pause", left, Message("pause_expired", {"at": paused["at"]}))
        else:
            self.cancel_timer("pause")
        if st == L.VIDEO_COMPLETED and self._awaits_recording():
            left = _left_of(s["video_ended_at"], settings.recording_ready_timeout_s)
            self.set_timer("recording_wait", left, Message("recording_overdue"))
        else:
            self.cancel_timer("recording_wait")

    def _awaits_recording(self) -> bool:
        return (
            self._recording_required()
            and self.state.get("recording") is None
            and bool(self.state.get("video_ended_at"))
        )

    def _after_move(self) -> None:
        super()._after_move()
        self._arm_timers()

    async def on_join_window_expired(self, msg: Message) -> None:
        if self.state["state"] != L.ENP_ASSIGNED:
            return
        if _left_of(self.state["assigned_at"], self.ctx.settings.join_window_s) > 0:
            self._arm_timers()
            return
        await self._end_unfinished(L.CANCELLED, "join_window")

    async def on_pause_expired(self, msg: Message) -> None:
        paused = self.state.get("paused")
        if self.state["state"] != L.VIDEO_IN_PROGRESS or not paused:
            return
        if paused["at"] != msg.data.get("at") or _left_of(
            paused["at"], self.ctx.settings.pause_timeout_s
        ):
            self._arm_timers()  # another pause, or early: the timer of the current one
            return
        await self._end_unfinished(L.FAILED, "party_lost")

    async def on_recording_overdue(self, msg: Message) -> None:
        if self.state["state"] != L.VIDEO_COMPLETED or not self._awaits_recording():
            return
        if _left_of(self.state["video_ended_at"], self.ctx.settings.recording_ready_timeout_s):
            self._arm_timers()
            return
        await self._end_unfinished(L.FAILED, "recording_failed")

    async def _end_unfinished(
        self, dst: str, reason: str, events: list[Event] | None = None
    ) -> None:
        """End an act that cannot be completed (by the server): the move, its
        incomplete-act entry, and the refund (an outbox row of the move)."""
        in_call = self.state["state"] == L.VIDEO_IN_PROGRESS
        moves = [*(events or []), self._move(dst, "system", reason=reason)]
        await self.commit(moves, statements=self._incomplete_act(reason))
        logger.warning(
            "session %s %s: %s",
            self.session_id,
            dst.lower(),
            reason,
            extra={"session_id": self.session_id},
        )
        self._after_move()
        if in_call:
            await self._stop_media()


def _is(roles: list[str]) -> str:
    return "is" if len(roles) == 1 else "are"

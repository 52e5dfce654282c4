"""A Twilio room as its status callbacks show it (media.twilio_video): the
recordings started, stored and failed, and which parties are in view now.
Pure bookkeeping, no I/O: it says what the session must hear.

A party is in view while one of its video recordings runs (a recording
whose callback names no `Type` counts as video; audio alone does not put a
party in view, and a screen share cannot be told from a camera by the
callbacks). The session hears of the room's first recording, of each
party's first video recording, and, during the call, of a party whose last
running video recording completed or failed: its recording lost (PROTOCOL
§5: with `ENF_RECORDING=required` the act pauses until a video recording of
it runs again); and of the room's end, which during the call loses every
party it recorded (nothing is in view in a room that is gone, and news of
it arriving late changes nothing). The session ignores both once the call
is over (the room closing its tracks after `video.end`).

A room first seen through a callback (`partial`: this process restarted, or
did not create it) may have recordings running that it never saw start, so
no party's loss is judged there (a false pause could not resume): its end
still is, and its failures count in the room's report.

A failed recording of a party is `superseded` when a recording of the same
party and kind runs on, or starts later: the room's record is what was
stored (a failed track's media is missing from it), and the failure and the
pause are in the session's journal. Any other failure makes the room's
recording failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Room:
    session_id: str
    room_sid: str | None = None
    partial: bool = False
    started: set[str] = field(default_factory=set)  # recording sids
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid -> track
    failed: set[str] = field(default_factory=set)
    downloading: set[str] = field(default_factory=set)
    ended: bool = False
    reported: bool = False
    # (party, video?) -> its recordings of that kind running now
    live: dict[tuple[str, bool], set[str]] = field(default_factory=dict)
    told: set[str] = field(default_factory=set)  # parties the session knows in view
    lost: set[str] = field(default_factory=set)  # parties it knows lost, not in view since
    # (party, video?) -> its failed recordings not covered by one of that kind since
    failed_of: dict[tuple[str, bool], set[str]] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)

    def runs(self, rec: str, who: str | None, video: bool) -> dict[str, Any] | None:
        """A recording started (not seen before): the `recording_started`
        the session must hear, if any."""
        first = not self.started
        self.started.add(rec)
        if self.ended:
            return None  # late news of a room that is gone: no one is in view in it
        if who is None:
            return {"user_id": None} if first and video else None
        self.live.setdefault((who, video), set()).add(rec)
        self.superseded |= self.failed_of.pop((who, video), set())  # covered from here on
        if not video or who in self.told:
            return None
        self.told.add(who)
        self.lost.discard(who)
        return {"user_id": who}

    def stops(self, rec: str, who: str | None, video: bool, failed: bool) -> dict[str, Any] | None:
        """A recording completed or failed: the `recording_failed` of a party
        whose media no longer reaches the record, if the session must hear one."""
        self.started.add(rec)
        live = self.live.setdefault((who, video), set()) if who is not None else set()
        was_live = rec in live
        live.discard(rec)
        if failed:
            self.failed.add(rec)
            if live:  # another recording of the party, of that kind, runs on
                self.superseded.add(rec)
            elif who is not None:
                self.failed_of.setdefault((who, video), set()).add(rec)
        if self.ended or self.partial or who is None or not video:
            return None  # the room closing its tracks, a room not wholly known, no party's view
        if not was_live and not failed:
            return None  # a duplicate
        if live or who in self.lost:
            return None  # still in view, or lost already
        return self._lose(who, "failed" if failed else "stopped")

    def end(self) -> bool:
        """The room ended: no one is in view in it any more. Whether this is
        news (the session hears it, and ignores it once the call is over)."""
        if self.ended:
            return False
        self.ended = True
        self.lost |= self.told
        self.told.clear()
        return True

    def _lose(self, who: str, how: str) -> dict[str, Any]:
        self.lost.add(who)
        self.told.discard(who)
        return {"reason": f"twilio: the recording of {who} {how}", "user_id": who, "tracks": []}

    def failures(self) -> set[str]:
        """The failed recordings that make the room's recording failed."""
        return self.failed - self.superseded

    def waiting(self) -> bool:
        """Whether recordings are still being completed or stored."""
        return bool(self.started - self.failed - set(self.stored))

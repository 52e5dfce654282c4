"""A Twilio room as its status callbacks show it (media.twilio_video): the
recordings started, stored and failed, and which parties are recorded now.
Pure bookkeeping, no I/O: it says what the session must hear.

A party is recorded while one of its video recordings runs (a recording
whose callback names no `Type` counts as video; audio alone does not put a
party in view). The session hears of the room's first recording, of each
party's first video recording, and, during the call, of a party whose last
running video recording completed or failed before the room ended: its
recording lost (PROTOCOL §5: with `ENF_RECORDING=required` the act pauses
until a recording of it runs again).

A room first seen through a callback (`partial`: this process restarted, or
did not create it) may have recordings running that it never saw start, so
no loss is judged there (a false pause could not resume): its failures count
in the room's report only. A failure of a recording not seen starting, in a
room wholly known, is a loss when no video recording of the party runs.

A failed recording of a party whose recording of the same kind (video,
audio) started again afterwards is `superseded`: the room's record is what
was stored, and the failure and the pause are in the session's journal; any
other failure makes the room's recording failed.
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
    live: dict[str, set[str]] = field(default_factory=dict)  # party -> video recordings running
    told: set[str] = field(default_factory=set)  # parties the session knows recorded
    lost: set[str] = field(default_factory=set)  # parties it knows lost, not recorded since
    # (party, video?) -> its failed recordings not recorded again since
    failed_of: dict[tuple[str, bool], set[str]] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)

    def runs(self, rec: str, who: str | None, video: bool) -> dict[str, Any] | None:
        """A recording started (not seen before): the `recording_started`
        the session must hear, if any."""
        first = not self.started
        self.started.add(rec)
        if who is not None:  # its failed recordings of this kind are superseded
            self.superseded |= self.failed_of.pop((who, video), set())
        if who is None or not video:
            return {"user_id": who} if first and video else None
        self.live.setdefault(who, set()).add(rec)
        if who in self.told:
            return None
        self.told.add(who)
        self.lost.discard(who)
        return {"user_id": who}

    def stops(self, rec: str, who: str | None, video: bool, failed: bool) -> dict[str, Any] | None:
        """A recording completed or failed: the `recording_failed` of a party
        whose media no longer reaches the record, if the session must hear one."""
        self.started.add(rec)
        if failed:
            self.failed.add(rec)
            if who is not None:
                self.failed_of.setdefault((who, video), set()).add(rec)
        if self.ended or self.partial or who is None or not video:
            return None  # the room closing its tracks, a room not wholly known, no party's view
        live = self.live.setdefault(who, set())
        if rec in live:
            live.discard(rec)
        elif not failed:
            return None  # a duplicate
        if live or who in self.lost:
            return None  # still in view, or lost already
        self.lost.add(who)
        self.told.discard(who)
        how = "failed" if failed else "stopped"
        return {"reason": f"twilio: the recording of {who} {how}", "user_id": who, "tracks": []}

    def failures(self) -> set[str]:
        """The failed recordings that make the room's recording failed."""
        return self.failed - self.superseded

    def waiting(self) -> bool:
        """Whether recordings are still being completed or stored."""
        return bool(self.started - self.failed - set(self.stored))

"""SessionActor: one notarization, from request to completion (PROTOCOL §4, §5).

Every request is checked in the contract's order — the gateway has already
refused malformed data and wrong roles — so here: `not_found` (no such
session, or not yours), then `conflict` (wrong state). Every state change
goes through `commit()`; `_move()` is the one place that changes `state`,
and it logs the transition.

The package: `state` (the typed state), `fold` (events into state),
`effects` (outbox rows, notifications), `view` (the public snapshot, the
matching request), `base` (checks, moves, commits), and the handlers:
`membership`, `call` and `ending` (client requests), `deliveries` and
`internal` (messages from other actors and timers), `recording` (the
recorder's reports), and `interruptions` (the unhappy half of the act: in
full view, pause and resume, the timeouts that end an act).
"""

from __future__ import annotations

from actors.session.call import CallRequests
from actors.session.ending import EndingRequests
from actors.session.internal import InternalMessages
from actors.session.membership import MembershipRequests
from actors.session.recording import RecordingReports


class SessionActor(
    MembershipRequests, CallRequests, InternalMessages, RecordingReports, EndingRequests
):
    """The session's handlers, each group from its module, on one actor."""


__all__ = ["SessionActor"]

"""The ten session states and the moves between them (PROTOCOL §5)."""

from __future__ import annotations

from typing import Final

REQUESTED: Final = "REQUESTED"
ENP_ASSIGNED: Final = "ENP_ASSIGNED"
VIDEO_IN_PROGRESS: Final = "VIDEO_IN_PROGRESS"
VIDEO_COMPLETED: Final = "VIDEO_COMPLETED"
NOTARIZING: Final = "NOTARIZING"
NOTARIZED: Final = "NOTARIZED"
DISTRIBUTING: Final = "DISTRIBUTING"
COMPLETED: Final = "COMPLETED"
CANCELLED: Final = "CANCELLED"
FAILED: Final = "FAILED"

STATES: Final = (
    REQUESTED,
    ENP_ASSIGNED,
    VIDEO_IN_PROGRESS,
    VIDEO_COMPLETED,
    NOTARIZING,
    NOTARIZED,
    DISTRIBUTING,
    COMPLETED,
    CANCELLED,
    FAILED,
)

TERMINAL: Final = frozenset({COMPLETED, CANCELLED, FAILED})
# Cancellation is allowed before NOTARIZING (by a participant, an admin or expiry).
CANCELLABLE: Final = frozenset({REQUESTED, ENP_ASSIGNED, VIDEO_IN_PROGRESS, VIDEO_COMPLETED})
# From these on, the notary is free to take the next session (PROTOCOL §8 Busy notaries).
RELEASES_NOTARY: Final = frozenset({NOTARIZED, DISTRIBUTING, COMPLETED, CANCELLED, FAILED})
# Sessions the server must pick up by itself after a restart: timers (request
# expiry, the join window, the reconnect grace and the pause timeout, the wait
# for the recording), finalisation and distribution.
RECOVER_ON_START: Final = (
    REQUESTED,
    ENP_ASSIGNED,
    VIDEO_IN_PROGRESS,
    VIDEO_COMPLETED,
    NOTARIZING,
    DISTRIBUTING,
)

TRANSITIONS: Final[dict[str | None, frozenset[str]]] = {
    None: frozenset({REQUESTED}),
    REQUESTED: frozenset({ENP_ASSIGNED, CANCELLED, FAILED}),
    ENP_ASSIGNED: frozenset({VIDEO_IN_PROGRESS, CANCELLED, FAILED}),
    VIDEO_IN_PROGRESS: frozenset({VIDEO_COMPLETED, CANCELLED, FAILED}),
    VIDEO_COMPLETED: frozenset({NOTARIZING, CANCELLED, FAILED}),
    NOTARIZING: frozenset({NOTARIZED, FAILED}),
    NOTARIZED: frozenset({DISTRIBUTING, FAILED}),
    DISTRIBUTING: frozenset({COMPLETED, FAILED}),
    COMPLETED: frozenset(),
    CANCELLED: frozenset(),
    FAILED: frozenset(),
}


def can_move(src: str | None, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())

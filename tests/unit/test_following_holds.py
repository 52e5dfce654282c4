"""When a paused topic's held events stand in for a journal read: a follow
placed at `after` with the topic's head at `head` needs every event between
them; one missing (committed before the subscription, say) means the journal
must be read."""

from __future__ import annotations

import pytest

from core.messages import Delivery
from gateway.following import _holds


def held(*seqs: int) -> list[Delivery]:
    return [Delivery("session:s", {"seq": s}, s) for s in seqs]


@pytest.mark.parametrize(
    ("buffer", "after", "head", "enough"),
    [
        (held(1), 0, 1, True),  # a new session: its REQUESTED event, held
        (held(2, 1, 3), 0, 3, True),  # in any order, and past the head too
        (held(1, 2, 3, 4), 0, 2, True),
        (held(), 5, 5, True),  # at the head: nothing to send
        (held(), 0, 1, False),  # committed before the subscription: read it
        (held(2, 3), 0, 3, False),  # the first one missing
        (held(1, 3), 0, 3, False),  # a hole
        (held(1, 1, 2), 0, 3, False),  # a duplicate does not stand for the last
    ],
)
def test_held_events_replace_the_journal_only_when_none_is_missing(
    buffer: list[Delivery], after: int, head: int, enough: bool
) -> None:
    assert _holds(buffer, after, head) is enough

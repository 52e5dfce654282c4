"""What travels between the gateway and actors, and between actors.

Plain, picklable dataclasses: the Ray host carries the same objects across
processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["customer", "enp", "admin"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as the gateway authenticated them."""

    user_id: str
    role: Role
    connection_id: str = ""
    request_id: str = ""
    kyc_verified: bool = False
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    """A request or an internal command. `kind` picks the handler: `on_<kind>`."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    caller: Caller | None = None


@dataclass(slots=True)
class Reply:
    """A handler's answer. `follow` asks the gateway to make the calling
    connection follow topics from the given seq (events after it are sent
    after the reply); `track` asks it to tell the actor when the connection
    closes. `heads` gives a topic's latest seq at reply time, when known, so
    a follow from that seq needs no journal read."""

    data: dict[str, Any] = field(default_factory=dict)
    follow: dict[str, int | None] = field(default_factory=dict)
    track: bool = False
    heads: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on the topic bus: a durable event (with seq) or an
    ephemeral one (no seq; optionally for one user only)."""

    topic: str
    event: dict[str, Any]
    seq: int | None = None
    to_user: str | None = None
    # The event as encoded, by codec name: each subscriber of a fan-out
    # using the same codec sends the frame encoded by the first.
    frames: dict[str, str | bytes] = field(default_factory=dict, compare=False, repr=False)

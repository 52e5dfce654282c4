"""The contract's model of notaries (PROTOCOL §5, §8) for test_state_machine.py,
beside state_model.py's sessions: a notary's presence, its open offer and its
active session; `expect_notary(...)` is the outcome of a notary's request to
its own actor, as state_model.py's `expect(...)` is of a session request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.unit.state_model import Expected, SessionModel


@dataclass
class NotaryModel:
    nid: str
    online: bool = False
    preference: str = "available"
    connected: bool = False
    offer: dict[str, Any] | None = None  # the open offer, from its topic's events
    active: str | None = None
    accepted: dict[str, str] = field(default_factory=dict)

    def offer_id(self) -> str | None:
        return None if self.offer is None else str(self.offer["offer_id"])

    def status(self) -> str:
        if not self.online:
            return "offline"
        if self.offer is not None or self.active is not None:
            return "busy"
        return self.preference


def holds(n: NotaryModel, sid: str) -> bool:
    return n.offer is not None and n.offer["session_id"] == sid


def free_for(s: SessionModel, notaries: Iterable[NotaryModel], excluded: set[str]) -> list[str]:
    """Notaries free to take REQUESTED `s` while it has no offer (none, by §5)."""
    if s.state != "REQUESTED" or any(holds(n, s.sid) for n in notaries):
        return []
    return [n.nid for n in notaries if n.status() == "available" and n.nid not in excluded]


def expect_notary(
    kind: str, n: NotaryModel, data: dict[str, Any]
) -> tuple[Expected, dict[str, Any] | None]:
    """A notary's request to its own actor: the outcome, and the offer it takes."""
    if kind == "presence.set":
        return (None if n.online else "conflict"), None
    if kind not in ("offer.accept", "offer.decline"):
        if kind == "presence.online" and not n.online:
            n.preference = "available"
        return None, None
    oid = data["offer_id"]
    if kind == "offer.accept" and n.accepted.get(oid) == n.active and n.active:
        return None, None  # a retried accept: the same answer
    if n.offer is not None and n.offer["offer_id"] == oid:
        return None, n.offer
    return "conflict", None

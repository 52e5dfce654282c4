"""What others see of a session: its public snapshot (PROTOCOL §4), sent to
clients and stored in its row of the `sessions` projection, and what the
Matchmaker needs to match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TypedDict

from actors import lifecycle as L
from actors.session.state import Document, LatLng, Paused, Recording, SessionState
from core.clock import iso, parse_iso
from persistence.journal import StoredEvent
from persistence.projections import SESSIONS, Projection


class ParticipantView(TypedDict):
    user_id: str
    role: str
    online: bool


class SessionView(TypedDict):
    """The session snapshot of PROTOCOL §4."""

    session_id: str
    state: str | None
    customer_id: str | None
    enp_id: str | None
    document: Document | None
    amount: float | None
    platform_fee: float | None
    enp_fee: float | None
    participants: list[ParticipantView]
    checks: dict[str, object]
    signed: bool
    sealed: bool
    recording: Recording | None
    envelope_id: str | None
    created_at: str | None
    seq: int
    # Beyond §4's list, for the apps: why the act is paused (else null), why
    # the session ended (CANCELLED, FAILED), and until when the call may start
    # (ENP_ASSIGNED: the join window).
    paused: Paused | None
    reason: str | None
    join_window_ends_at: str | None


class MatchingRequest(TypedDict):
    """What the Matchmaker ranks notaries by (shared/MATCHING.md)."""

    customer_id: str | None
    document_type: str | None
    price_preference: float | None
    location: LatLng | None
    preferred_notary_id: str | None
    created_at: str | None


def public_view(
    session_id: str,
    s: SessionState,
    seq: int,
    conns: Mapping[str, set[str]] | None,
    join_window_s: float | None = None,
) -> SessionView:
    """The snapshot at `seq`. With `conns` (live connections per user), a
    participant is online when connected; without, when present (as journaled)."""
    join_ends = None
    if join_window_s is not None and s["state"] == L.ENP_ASSIGNED and s.get("assigned_at"):
        join_ends = iso(parse_iso(s["assigned_at"]) + timedelta(seconds=join_window_s))
    participants: list[ParticipantView] = [
        {
            "user_id": uid,
            "role": p["role"],
            "online": bool(conns.get(uid)) if conns is not None else p["present"],
        }
        for uid, p in s["participants"].items()
    ]
    checks = {k: v for k, v in s["checks"].items() if k != "at"}
    return {
        "session_id": session_id,
        "state": s["state"],
        "customer_id": s.get("customer_id"),
        "enp_id": s.get("enp_id"),
        "document": s.get("document"),
        "amount": s.get("amount"),
        "platform_fee": s.get("platform_fee"),
        "enp_fee": s.get("enp_fee"),
        "participants": participants,
        "checks": checks,
        "signed": s["signed"] is not None,
        "sealed": s["sealed"] is not None,
        "recording": s["recording"],
        "envelope_id": s["envelope_id"],
        "created_at": s.get("created_at"),
        "seq": seq,
        "paused": s.get("paused") if s["state"] == L.VIDEO_IN_PROGRESS else None,
        "reason": s.get("reason"),
        "join_window_ends_at": join_ends,
    }


def matching_request(s: SessionState) -> MatchingRequest:
    req = s.get("request")
    document = s.get("document")
    return {
        "customer_id": s.get("customer_id"),
        "document_type": document.get("type") if document else None,
        "price_preference": req.get("price_preference") if req else None,
        "location": req.get("location") if req else None,
        "preferred_notary_id": req.get("preferred_notary_id") if req else None,
        "created_at": s.get("created_at"),
    }


def sessions_row(session_id: str, s: SessionState, last: StoredEvent) -> Projection:
    """The session's row in the `sessions` projection, as of its `last` event."""
    return Projection(
        SESSIONS,
        (
            session_id,
            s["state"],
            s["customer_id"],
            s.get("enp_id"),
            last.seq,
            public_view(session_id, s, last.seq, None),
            matching_request(s),
            parse_iso(s["created_at"]),
            parse_iso(last.at),
        ),
    )

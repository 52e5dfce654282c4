"""The session's fold: `apply(state, event)`, one small function per event
(and, for `session.state`, per state entered). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from actors import lifecycle as L
from actors.session.state import Participant, SessionState
from persistence.journal import StoredEvent

Data = dict[str, Any]


# -- session.state: what entering each state records ------------------------------


def _requested(s: SessionState, d: Data, at: str) -> None:
    req = d["request"]
    s["customer_id"] = req["customer_id"]
    s["document"] = req["document"]
    s["request"] = req
    s["created_at"] = at
    s["expires_at"] = req["expires_at"]
    s["enp_id"] = None
    s["amount"] = None
    s["platform_fee"] = None
    s["enp_fee"] = None
    s["participants"][req["customer_id"]] = {"role": "customer", "present": False}


def _assigned(s: SessionState, d: Data, at: str) -> None:
    s["enp_id"] = d["enp_id"]
    s["amount"] = d["amount"]
    s["platform_fee"] = d["platform_fee"]
    s["enp_fee"] = d["enp_fee"]
    s["offer_id"] = d.get("offer_id")
    s["assigned_at"] = at
    s["enp_name"] = d.get("enp_name")
    s["enp_license"] = d.get("enp_license")
    s["participants"][d["enp_id"]] = {"role": "enp", "present": False}


def _video_started(s: SessionState, d: Data, at: str) -> None:
    s["video_started_at"] = at
    s["video_room"] = d.get("room")


def _video_ended(s: SessionState, d: Data, at: str) -> None:
    s["video_ended_at"] = at


def _ended(s: SessionState, d: Data, at: str) -> None:
    s["reason"] = d.get("reason")


def _distributing(s: SessionState, d: Data, at: str) -> None:
    s["recipients"] = d.get("recipients", [])


_ENTERED: dict[str, Callable[[SessionState, Data, str], None]] = {
    L.REQUESTED: _requested,
    L.ENP_ASSIGNED: _assigned,
    L.VIDEO_IN_PROGRESS: _video_started,
    L.VIDEO_COMPLETED: _video_ended,
    L.CANCELLED: _ended,
    L.FAILED: _ended,
    L.DISTRIBUTING: _distributing,
}


# -- one function per event -------------------------------------------------------


def _state(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s["state"] = d["state"]
    s["updated_at"] = e.at
    entered = _ENTERED.get(d["state"])
    if entered is not None:
        entered(s, d, e.at)
    if d["state"] == L.ENP_ASSIGNED:
        s["assigned_seq"] = e.seq


def _joined(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    p = s["participants"][d["user_id"]]
    p["present"] = True
    s.get("lost", {}).pop(d["user_id"], None)
    if "consent" in d:
        p["consent"] = d["consent"]
    if "location" in d:
        p["location"] = d["location"]


def _left(s: SessionState, e: StoredEvent) -> None:
    uid = e.data["user_id"]
    s["participants"][uid]["present"] = False
    if s["state"] == L.VIDEO_IN_PROGRESS:
        # Gone from the call: the act pauses, and this party's identity is
        # verified again when it comes back (PROTOCOL §5).
        s.setdefault("lost", {})[uid] = e.at


def _paused(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s["paused"] = {"reason": d["reason"], "user_id": d.get("user_id"), "at": e.at}


def _resumed(s: SessionState, e: StoredEvent) -> None:
    s["paused"] = None


def _checks(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s["checks"] = {
        "comprehension_confirmed": d["comprehension_confirmed"],
        "duress_check_passed": d["duress_check_passed"],
        "at": e.at,
    }


def _signed(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s["signed"] = {"user_id": d["user_id"], "signature": d["signature"], "at": e.at}


def _sealed(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s["sealed"] = {
        "user_id": d["user_id"],
        "signature": d["signature"],
        "seal": d["seal"],
        "at": e.at,
    }


def _delivery(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s.setdefault("deliveries", {})[str(d["recipient"])] = d["status"]


def _recording_started(s: SessionState, e: StoredEvent) -> None:
    s["recording_started"] = True
    s.pop("recording_failed", None)  # recording again (a new worker, a new video)
    uid = e.data.get("user_id")
    users = s.setdefault("recording_users", [])
    if uid and uid not in users:
        users.append(uid)


def _recording_ready(s: SessionState, e: StoredEvent) -> None:
    d = e.data
    s["recording"] = {
        "url": d["url"],
        "sha256": d["sha256"],
        "bytes": d["bytes"],
        "duration_s": d["duration_s"],
    }
    s["recording_tracks"] = d.get("tracks") or []


def _recording_failed(s: SessionState, e: StoredEvent) -> None:
    uid = e.data.get("user_id")
    if uid is not None:  # one party's media stopped reaching the recorder
        s["recording_users"] = [u for u in s.get("recording_users") or [] if u != uid]
        return
    s["recording_failed"] = {"reason": e.data["reason"], "at": e.at}
    s["recording_started"] = False  # a restarted video records anew
    s["recording_users"] = []


def _notarized(s: SessionState, e: StoredEvent) -> None:
    s["envelope_id"] = e.data["envelope_id"]
    s["notarized_at"] = e.at


_FOLD: dict[str, Callable[[SessionState, StoredEvent], None]] = {
    "session.state": _state,
    "participant.joined": _joined,
    "participant.left": _left,
    "checks.recorded": _checks,
    "act.signed": _signed,
    "act.sealed": _sealed,
    "delivery.status": _delivery,
    "recording.started": _recording_started,
    "session.paused": _paused,
    "session.resumed": _resumed,
    "recording.ready": _recording_ready,
    "recording.failed": _recording_failed,
    "session.notarized": _notarized,
}


def copy_for_fold(s: SessionState) -> SessionState:
    """A copy of `s` that `apply` may change without changing `s`: new
    containers for what the fold changes in place (the participants and each
    of them, `lost`, `deliveries`, `recording_users`); every other value the
    fold only ever replaces, so the copy shares it. A few times cheaper than
    a deep copy, on every commit (`tests/unit/test_session_fold_copy.py`
    holds each event of the fold to it)."""
    new = cast(SessionState, dict(s))
    new["participants"] = {uid: cast(Participant, dict(p)) for uid, p in s["participants"].items()}
    for key in ("lost", "deliveries"):
        if s.get(key) is not None:
            new[key] = dict(s[key])
    if s.get("recording_users") is not None:
        new["recording_users"] = list(s["recording_users"])
    return new


def apply(s: SessionState, e: StoredEvent) -> None:
    """Fold one event into `s` (mutating it); events it does not know change nothing."""
    fold = _FOLD.get(e.name)
    if fold is not None:
        fold(s, e)

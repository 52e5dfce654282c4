"""What a session owes the outside world and the people in it: the outbox
rows committed with its events (domain webhooks; payment hold, release and
refund; the notarized document's distribution by SMS or webhook) and the
notifications for people following it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors import lifecycle as L
from actors.session.state import SessionState
from config.settings import Settings
from core.links import sign_path
from persistence.journal import StoredEvent
from persistence.outbox import sms_message, webhook_event
from persistence.projections import Projection

# What a `session.<state>` webhook tells of its `session.state` event.
_PUBLIC_KEYS = ("state", "prev", "by", "reason", "enp_id")


def outbox_rows(
    session_id: str,
    s: SessionState,
    events: Sequence[StoredEvent],
    settings: Settings,
    link_secret: str,
) -> list[Projection]:
    """Events for the outside world, committed with their causes (`s` is the
    state after all of `events`)."""
    rows: list[Projection] = []
    for e in events:
        if e.name == "session.notarized":
            rows.append(webhook_event(session_id, e.seq, "session.notarized", dict(e.data), e.at))
        elif e.name == "session.state":
            rows += _state_rows(session_id, s, e, settings, link_secret)
    return rows


def _state_rows(
    session_id: str, s: SessionState, e: StoredEvent, settings: Settings, link_secret: str
) -> list[Projection]:
    d = e.data
    state = d["state"]
    public = {k: d[k] for k in _PUBLIC_KEYS if k in d}
    rows = [webhook_event(session_id, e.seq, f"session.{state.lower()}", public, e.at)]
    if state == L.DISTRIBUTING:
        rows += distribution_rows(session_id, s, e, settings, link_secret)
        return rows
    payment = _payment(s, state, d)
    if payment is not None:
        rows.append(webhook_event(session_id, e.seq, payment[0], payment[1], e.at))
    return rows


def _payment(s: SessionState, state: str, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The payment event a move causes: hold on assignment; release on
    completion and refund on cancellation or failure, once a notary held the
    amount."""
    held = s.get("enp_id") is not None and s.get("amount") is not None
    if state == L.ENP_ASSIGNED:
        return "payment.hold", _money(s)
    if state == L.COMPLETED and held:
        return "payment.release", _money(s)
    if state in (L.CANCELLED, L.FAILED) and held:
        return "payment.refund", {**_money(s), "reason": d.get("reason")}
    return None


def _money(s: SessionState) -> dict[str, Any]:
    return {
        "amount": s.get("amount"),
        "platform_fee": s.get("platform_fee"),
        "enp_fee": s.get("enp_fee"),
        "currency": "PHP",
        "customer_id": s.get("customer_id"),
        "enp_id": s.get("enp_id"),
    }


def distribution_rows(
    session_id: str, s: SessionState, e: StoredEvent, settings: Settings, link_secret: str
) -> list[Projection]:
    """One message per recipient of the DISTRIBUTING event `e`, with a signed
    link to the shared envelope."""
    envelope_id = s.get("envelope_id")
    path, _ = sign_path(
        link_secret, f"/v1/envelopes/{envelope_id}/shared", settings.share_link_ttl_s
    )
    link = (settings.public_url or f"http://{settings.host}:{settings.port}") + path
    rows = []
    for i, r in enumerate(e.data.get("recipients") or []):
        if r["channel"] == "sms":
            body = f"Your notarized document {envelope_id} is ready: {link}"
            rows.append(sms_message(session_id, session_id, e.seq, r["to"], body, i))
        else:
            data = {"envelope_id": envelope_id, "recipient": i, "to": r["to"], "link": link}
            rows.append(webhook_event(session_id, e.seq, "document.distributed", data, e.at, i))
    return rows


# The platform design's notifications, for people (the events say the same
# to programs): to every connected follower of the session, not journaled.
NOTIFICATIONS: dict[str, tuple[str, str]] = {
    L.ENP_ASSIGNED: ("enp_assigned", "A notary has accepted your request."),
    L.VIDEO_IN_PROGRESS: ("video_starting", "The video session is starting."),
    L.NOTARIZED: ("notarization_complete", "The document is notarized."),
    L.CANCELLED: ("request_cancelled", "The notarization request was cancelled."),
    L.FAILED: ("act_failed", "The notarization could not be completed."),
    L.COMPLETED: ("session_completed", "The notarized document has been distributed."),
}


def notification(session_id: str, state: str | None) -> dict[str, str] | None:
    """The `notification` event's data for entering `state`, if people get one."""
    found = NOTIFICATIONS.get(state) if state is not None else None
    if found is None:
        return None
    kind, text = found
    return {"kind": kind, "session_id": session_id, "message": text}

"""The session's durable state, typed: what `fold.apply` builds from the
journal and what snapshots hold.

Plain TypedDicts, so the state stays JSON-shaped: snapshotted to Postgres as
JSON, copied on every commit by what the fold changes in place
(`fold.copy_for_fold`), and snapshots written before the
types existed load as they are. Keys a fresh session lacks are optional
(`total=False`); `initial_state()` has the ones always present.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

Event = tuple[str, dict[str, Any]]
"""An event a handler decided: (name, data), before `commit()` numbers it."""


class LatLng(TypedDict):
    lat: float
    lng: float


class Location(LatLng, total=False):
    """Where a party says it is (`session.join` location)."""

    country: str


class Document(TypedDict):
    id: str
    sha256: str
    type: str
    title: str


class Request(TypedDict):
    """What the customer asked for at `session.request` (principal sealed)."""

    customer_id: str
    document: Document
    principal: str | None
    price_preference: float | None
    location: LatLng | None
    preferred_notary_id: str | None
    idempotency_key: str
    kyc_session_id: Any
    face_match_score: Any
    expires_at: str


class Participant(TypedDict):
    role: str
    present: bool
    consent: NotRequired[dict[str, bool]]
    location: NotRequired[Location]


class Checks(TypedDict, total=False):
    comprehension_confirmed: bool
    duress_check_passed: bool
    at: str


class Signed(TypedDict):
    user_id: str
    signature: str
    at: str


class Sealed(Signed):
    seal: str


class Recording(TypedDict):
    """The finished recording the act refers to (the customer's track)."""

    url: str
    sha256: str
    bytes: int
    duration_s: float | None


class Track(TypedDict, total=False):
    """One stored recording file, as the recorder reports it."""

    user_id: str
    kind: str
    url: str
    sha256: str
    bytes: int
    duration_s: float | None


class RecordingFailed(TypedDict):
    reason: str
    at: str


class Paused(TypedDict):
    """Why the act is paused (PROTOCOL §5): `party_left` (a party away past
    the grace, or gone by `session.leave`) or `recording`."""

    reason: str
    user_id: str | None
    at: str


class Recipient(TypedDict):
    """Where the notarized document goes; `to` is sealed, `hint` masked."""

    channel: str
    to: str
    hint: str


class _Always(TypedDict):
    state: str | None
    participants: dict[str, Participant]
    checks: Checks
    signed: Signed | None
    sealed: Sealed | None
    recording: Recording | None
    envelope_id: str | None


class SessionState(_Always, total=False):
    updated_at: str
    # From REQUESTED on.
    customer_id: str
    document: Document
    request: Request
    created_at: str
    expires_at: str
    # None until ENP_ASSIGNED.
    enp_id: str | None
    amount: float | None
    platform_fee: float | None
    enp_fee: float | None
    offer_id: str | None
    assigned_at: str
    assigned_seq: int  # the seq of the ENP_ASSIGNED event
    enp_name: str | None
    enp_license: str | None
    video_started_at: str
    # The hosted provider's room (Twilio's room SID), when there is one.
    video_room: str | None
    video_ended_at: str
    # The act is paused while set (session.paused → session.resumed).
    paused: Paused | None
    # Parties gone from the call (since when): their identity is verified
    # again, by a token issued after that moment, when they re-join.
    lost: dict[str, str]
    reason: str | None
    recipients: list[Recipient]
    deliveries: dict[str, str]  # recipient index -> final status
    recording_started: bool
    # Parties recorded now: whose media the recorder receives (webrtc), whose
    # video a hosted room records (twilio); `recording.started` per party,
    # `recording.failed` takes out its `user_id`, or everyone.
    recording_users: list[str]
    recording_tracks: list[Track]
    recording_failed: RecordingFailed
    notarized_at: str


def initial_state() -> SessionState:
    return {
        "state": None,
        "participants": {},
        "checks": {},
        "signed": None,
        "sealed": None,
        "recording": None,
        "envelope_id": None,
    }


def as_record(s: SessionState) -> dict[str, Any]:
    """The state as persistence's record builders (the envelope, the notarial
    book) take it: a JSON object, read only."""
    return cast(dict[str, Any], s)

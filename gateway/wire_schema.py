"""What the server sends on the WebSocket (PROTOCOL §3-5, §8), typed: the
`welcome`, the `data` of each request's ok reply, and the `data` of each
event, as the gateway and the actors build them (gateway.ws, actors.session,
actors.notary, actors.notary_presence, actors.matchmaker). The AsyncAPI
document (gateway.http.asyncapi) is generated from these with pydantic, as
the requests' schemas are from the models that validate them
(gateway.requests).

A key that may be absent is `NotRequired`; a value that may be null is
`| None`. What the server echoes from a request (a document, a place, a
consent, an ICE candidate) is the request's own model. Only schemas are
made from these types: nothing is validated against them at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field, WithJsonSchema
from typing_extensions import TypedDict

from actors import lifecycle as L
from gateway.requests import Consent, Document, IceCandidate, JoinLocation, LatLng

State = Annotated[str, WithJsonSchema({"type": "string", "enum": list(L.STATES)})]
PrevState = Annotated[
    str | None, WithJsonSchema({"enum": [*L.STATES, None], "description": "null: the first"})
]
Time = Annotated[str, Field(description="ISO 8601, UTC (2026-11-24T10:00:00.000Z)")]
Role = Literal["customer", "enp"]
Channel = Literal["sms", "webhook"]
# The session snapshot (PROTOCOL §4): gateway.http.json_schema.SNAPSHOT (a bare
# "$ref" would be looked up among pydantic's own definitions).
Snapshot = Annotated[
    dict[str, Any], WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/Snapshot"}]})
]


class Welcome(TypedDict):
    """After `hello`, or on connect with a header token."""

    user_id: str
    role: Literal["customer", "enp", "admin"]
    connection_id: str
    heartbeat_s: Annotated[float, Field(description="The interval of the server's pings")]


# -- reply data (PROTOCOL §4) -------------------------------------------------------


class Nothing(TypedDict):
    """An empty object: the request was applied."""


class PresenceStatus(TypedDict):
    """The notary's status (busy: it holds an offer or an active session)."""

    status: Literal["available", "away", "busy"]


class NotaryPresence(TypedDict):
    notary_id: str
    status: Literal["available", "away", "busy", "offline"]


class PresenceList(TypedDict):
    """Every known notary's status; then `notary.presence` events."""

    notaries: list[NotaryPresence]


class AvailableNotary(TypedDict):
    notary_id: str
    name: str | None
    score: Annotated[float, Field(description="shared/MATCHING.md's score, best first")]
    status: Literal["available"]


class AvailableNotaries(TypedDict):
    """The notaries that could be offered a session now, best first."""

    notaries: list[AvailableNotary]


class SessionRequested(TypedDict):
    """The session (a repeat of the idempotency key: the same one, as it stands)."""

    session_id: str
    state: State


class OfferAccepted(TypedDict):
    session_id: str


class VideoConfig(TypedDict):
    """How to take part in the call: the provider, ICE servers, whether the
    server's recorder peer is on (webrtc), and with Twilio a room and token."""

    provider: Literal["webrtc", "twilio"]
    ice_servers: Annotated[list[dict[str, Any]], Field(description="RTCIceServer objects")]
    recorder: bool
    room: NotRequired[str]
    room_name: NotRequired[str]
    token: NotRequired[Annotated[str, Field(description="A provider access token")]]


class Joined(TypedDict):
    """The snapshot; during the call, how to take part (afresh)."""

    session: Snapshot
    video: NotRequired[VideoConfig]


class Pong(TypedDict):
    server_time: Time


# -- event data on session:<id> (PROTOCOL §5) -------------------------------------------


class JournaledRequest(TypedDict):
    """What the customer asked for, as journaled (personal data sealed)."""

    customer_id: str
    document: Document
    principal: Annotated[str | None, Field(description="The principal, sealed (AES-256-GCM)")]
    price_preference: float | None
    location: LatLng | None
    preferred_notary_id: str | None
    idempotency_key: str
    kyc_session_id: Any
    face_match_score: Any
    expires_at: Time


class JournaledRecipient(TypedDict):
    channel: Channel
    to: Annotated[str, Field(description="The address, sealed")]
    hint: Annotated[str, Field(description="The address, masked")]


class SessionStateData(TypedDict):
    """The session moved from `prev` to `state`. REQUESTED carries the
    `request`; ENP_ASSIGNED the notary and the amounts; VIDEO_IN_PROGRESS
    `recorder` (and a hosted `room`); DISTRIBUTING the `recipients`;
    CANCELLED and FAILED the `reason`."""

    state: State
    prev: PrevState
    by: Annotated[str, Field(description='A user id, or "system"')]
    reason: NotRequired[str]
    request: NotRequired[JournaledRequest]
    enp_id: NotRequired[str]
    offer_id: NotRequired[str]
    amount: NotRequired[float]
    platform_fee: NotRequired[float]
    enp_fee: NotRequired[float]
    enp_name: NotRequired[str | None]
    enp_license: NotRequired[str | None]
    recorder: NotRequired[bool]
    room: NotRequired[str]
    recipients: NotRequired[list[JournaledRecipient]]


class ParticipantJoined(TypedDict):
    """A party joined; with its consent (all given so far) and place when new."""

    user_id: str
    role: Role
    consent: NotRequired[Consent]
    location: NotRequired[JoinLocation]


class ParticipantLeft(TypedDict):
    user_id: str
    role: Role


class SessionPaused(TypedDict):
    """The act paused: a party away (`party_left`) or the recording stopped."""

    reason: Literal["party_left", "recording"]
    user_id: NotRequired[str]


class ChecksRecorded(TypedDict):
    comprehension_confirmed: bool
    duress_check_passed: bool
    by: str


class ActSigned(TypedDict):
    user_id: str
    signature: str


class ActSealed(TypedDict):
    user_id: str
    signature: str
    seal: str


class RecordingStarted(TypedDict):
    """The recorder receives this party's media (null: a hosted room records)."""

    user_id: str | None


class Track(TypedDict):
    """One stored recording file."""

    user_id: str | None
    kind: str
    url: str
    sha256: str
    bytes: int
    duration_s: NotRequired[float | None]


class RecordingReady(TypedDict):
    """The session's recording (the customer's file) and every stored file."""

    url: str
    sha256: str
    bytes: int
    duration_s: float | None
    tracks: list[Track]


class RecordingFailed(TypedDict):
    """The recording (or one party's media, with `user_id`) failed; what was kept."""

    reason: str
    tracks: list[Track]
    user_id: NotRequired[str]


class SessionNotarized(TypedDict):
    envelope_id: str


class DeliveryStatus(TypedDict):
    """One recipient's final outcome (`recipient`: its index in the request)."""

    recipient: int
    channel: Channel
    to: Annotated[str | None, Field(description="The address, masked")]
    status: Literal["delivered", "dead_letter"]
    delivery_id: str
    reason: NotRequired[str]


class SessionResumed(TypedDict):
    """The act goes on: every party is back and recorded."""


# -- event data on notary:<id> and presence, and ephemeral ones -------------------------


class Offer(TypedDict):
    """A session offered to this notary, until `expires_at`."""

    offer_id: str
    session_id: str
    document_type: str | None
    amount: float | None
    expires_at: Time


class OfferClosed(TypedDict):
    """`reason`: declined, session_closed, notary_offline, … (none when expired)."""

    offer_id: str
    session_id: str
    reason: NotRequired[str]


# `from` is a keyword: the functional form.
SignalRelayed = TypedDict(
    "SignalRelayed",
    {
        "from": Annotated[str, Field(description='The sender, or "recorder"')],
        "kind": Literal["offer", "answer", "ice"],
        "sdp": NotRequired[str],
        "candidate": NotRequired[IceCandidate],
    },
)


class Notification(TypedDict):
    """A hint for the app to show (enp_assigned, video_starting, act_paused,
    notarization_complete, request_cancelled, act_failed, session_completed)."""

    kind: str
    session_id: str
    message: str


# -- the catalogue ------------------------------------------------------------------------

REPLIES: dict[str, Any] = {  # request type -> its ok reply's data
    "presence.online": PresenceStatus,
    "presence.set": PresenceStatus,
    "presence.offline": Nothing,
    "presence.subscribe": PresenceList,
    "notaries.available": AvailableNotaries,
    "session.request": SessionRequested,
    "offer.accept": OfferAccepted,
    "offer.decline": Nothing,
    "session.join": Joined,
    "session.leave": Nothing,
    "signal": Nothing,
    "video.start": VideoConfig,
    "checks.record": Nothing,
    "act.sign": Nothing,
    "act.seal": Nothing,
    "video.end": Nothing,
    "session.notarize": Nothing,
    "session.distribute": Nothing,
    "session.cancel": Nothing,
    "ping": Pong,
}

SESSION_TOPIC = "^session:"
NOTARY_TOPIC = "^notary:"
PRESENCE_TOPIC = "^presence$"


@dataclass(frozen=True)
class EventKind:
    name: str
    data: Any  # its data's type
    topic: str  # a pattern of the topics it comes on
    durable: bool  # with `seq`, journaled, replayed; else ephemeral


EVENTS: tuple[EventKind, ...] = (
    EventKind("session.state", SessionStateData, SESSION_TOPIC, True),
    EventKind("participant.joined", ParticipantJoined, SESSION_TOPIC, True),
    EventKind("participant.left", ParticipantLeft, SESSION_TOPIC, True),
    EventKind("session.paused", SessionPaused, SESSION_TOPIC, True),
    EventKind("session.resumed", SessionResumed, SESSION_TOPIC, True),
    EventKind("checks.recorded", ChecksRecorded, SESSION_TOPIC, True),
    EventKind("act.signed", ActSigned, SESSION_TOPIC, True),
    EventKind("act.sealed", ActSealed, SESSION_TOPIC, True),
    EventKind("recording.started", RecordingStarted, SESSION_TOPIC, True),
    EventKind("recording.ready", RecordingReady, SESSION_TOPIC, True),
    EventKind("recording.failed", RecordingFailed, SESSION_TOPIC, True),
    EventKind("session.notarized", SessionNotarized, SESSION_TOPIC, True),
    EventKind("delivery.status", DeliveryStatus, SESSION_TOPIC, True),
    EventKind("offer", Offer, NOTARY_TOPIC, True),
    EventKind("offer.expired", OfferClosed, NOTARY_TOPIC, True),
    EventKind("offer.withdrawn", OfferClosed, NOTARY_TOPIC, True),
    EventKind("signal", SignalRelayed, SESSION_TOPIC, False),
    EventKind("notary.presence", NotaryPresence, PRESENCE_TOPIC, False),
    EventKind("video.config", VideoConfig, SESSION_TOPIC, False),
    EventKind("notification", Notification, SESSION_TOPIC, False),
)

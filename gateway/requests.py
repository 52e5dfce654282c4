"""Every request type of PROTOCOL §4: its data's shape, and its `Spec` (who
may send it, which actor handles it, what the transport must know: see
`gateway.specs`); and the parsing of a request against them.

Shapes are checked here (`bad_request`), then roles and KYC (`forbidden`);
existence, ownership (`not_found`) and state (`conflict`) are the actors'
business.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from core.clock import now_iso
from core.errors import ProtocolError
from core.ids import PRESENCE_TOPIC, is_identifier, session_address
from core.text import storable
from gateway.auth import Identity
from gateway.specs import (
    ALL,
    CANONICAL_UUID,
    Spec,
    matchmaker,
    new_session,
    own_notary,
    session,
    table,
)


def _no_nul(v: str) -> str:
    """Text that can be stored as it is (PROTOCOL §8): no NUL, no unpaired
    surrogate (Postgres and UTF-8 refuse them; nothing is silently changed)."""
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    if storable(v) != v:
        raise ValueError("must not contain unpaired surrogates")
    return v


def _identifier(v: str) -> str:
    if not is_identifier(v):
        raise ValueError("must be 1-128 ASCII letters, digits or -_.@")
    return v


# Any text from a client that may reach a row (journal, book, jsonb): storable.
StorableStr = Annotated[str, AfterValidator(_no_nul)]
Text = Annotated[StorableStr, StringConstraints(min_length=1, max_length=512)]
LongText = Annotated[StorableStr, StringConstraints(min_length=1, max_length=32_768)]
# Ids of users, sessions, notaries, documents and offers (PROTOCOL §8).
Identifier = Annotated[str, AfterValidator(_identifier)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Seq = Annotated[int, Field(ge=0)]


class Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)


class LatLng(Model):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class JoinLocation(LatLng):
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None


class Empty(Model):
    pass


class PresenceOnline(Model):
    since_seq: Seq | None = None


class PresenceSet(Model):
    status: Literal["available", "away"]


class NotariesAvailable(Model):
    document_type: Text | None = None
    location: LatLng | None = None
    price_preference: float | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1, le=100)


class Document(Model):
    id: Identifier
    sha256: Sha256
    type: Text
    title: Text


class Principal(Model):
    name: Text
    address: Text | None = None
    id_type: Text | None = None
    id_number: Text | None = None


class SessionRequest(Model):
    idempotency_key: Annotated[StorableStr, StringConstraints(min_length=1, max_length=128)]
    document: Document
    principal: Principal | None = None
    price_preference: float | None = Field(default=None, ge=0)
    location: LatLng | None = None
    preferred_notary_id: Identifier | None = None


class OfferRef(Model):
    offer_id: Identifier


class SessionRef(Model):
    session_id: Identifier


class Consent(Model):
    recording: bool | None = None
    privacy: bool | None = None


class SessionJoin(SessionRef):
    since_seq: Seq | None = None
    consent: Consent | None = None
    location: JoinLocation | None = None


class IceCandidate(Model):
    candidate: Annotated[StorableStr, StringConstraints(max_length=4096)]
    sdpMid: Annotated[StorableStr, StringConstraints(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=1024)] | None = None


_SDP_LINE = re.compile(r"^v=0\r?\n")


class Signal(SessionRef):
    to: Identifier  # a user id, or "recorder"
    kind: Literal["offer", "answer", "ice"]
    sdp: LongText | None = None
    candidate: IceCandidate | None = None

    @model_validator(mode="after")
    def _shape(self) -> Signal:
        if self.kind in ("offer", "answer"):
            if self.sdp is None:
                raise ValueError(f"{self.kind} needs sdp")
            if not _SDP_LINE.match(self.sdp) or "\nm=" not in self.sdp:
                raise ValueError("sdp is not a session description (RFC 8866)")
        elif self.candidate is None:
            raise ValueError("ice needs candidate")
        return self


class ChecksRecord(SessionRef):
    comprehension_confirmed: bool
    duress_check_passed: bool


class ActSign(SessionRef):
    signature: LongText


class ActSeal(SessionRef):
    signature: LongText
    seal: LongText


class Recipient(Model):
    channel: Literal["sms", "webhook"]
    to: Text

    @model_validator(mode="after")
    def _phone(self) -> Recipient:
        if self.channel == "sms" and not re.fullmatch(r"\+[1-9]\d{7,14}", self.to):
            raise ValueError("an sms recipient needs a phone number in E.164 form (+639171234567)")
        return self


class Distribute(SessionRef):
    recipients: Annotated[list[Recipient], Field(max_length=50)]


class Cancel(SessionRef):
    reason: Text


def _server_time() -> dict[str, Any]:
    return {"server_time": now_iso()}


REQUESTS: dict[str, Spec] = table(
    {
        "presence.online": Spec(
            PresenceOnline, ("enp",), own_notary, follows_target_first=True, holds_lease=True
        ),
        "presence.set": Spec(PresenceSet, ("enp",), own_notary),
        "presence.offline": Spec(Empty, ("enp",), own_notary),
        "presence.subscribe": Spec(
            Empty, ALL, matchmaker, message="presence_list", subscribes=PRESENCE_TOPIC
        ),
        "notaries.available": Spec(
            NotariesAvailable, ("customer", "admin"), matchmaker, message="available"
        ),
        "session.request": Spec(
            SessionRequest,
            ("customer",),
            new_session,
            needs_kyc=True,
            follows_target_first=True,
            opens_request=True,
        ),
        "offer.accept": Spec(OfferRef, ("enp",), own_notary),
        "offer.decline": Spec(OfferRef, ("enp",), own_notary),
        "session.join": Spec(SessionJoin, ALL, session, follows_target_first=True),
        "session.leave": Spec(SessionRef, ("customer", "enp"), session),
        "signal": Spec(Signal, ("customer", "enp"), session),
        "video.start": Spec(SessionRef, ("enp",), session),
        "checks.record": Spec(ChecksRecord, ("enp",), session),
        "act.sign": Spec(ActSign, ("customer",), session),
        "act.seal": Spec(ActSeal, ("enp",), session),
        "video.end": Spec(SessionRef, ("enp",), session),
        "session.notarize": Spec(SessionRef, ("enp",), session),
        "session.distribute": Spec(Distribute, ("customer", "enp"), session),
        "session.cancel": Spec(Cancel, ALL, session),
        "ping": Spec(Empty, ALL, matchmaker, answer=_server_time),
    }
)


def _fast_session_join(data: dict[str, Any]) -> dict[str, Any] | None:
    """`session.join` as the hot path sends it ({session_id, since_seq?}),
    checked by hand; anything else goes through the model (same errors)."""
    sid = data.get("session_id")
    if type(sid) is not str or not CANONICAL_UUID.fullmatch(sid):
        return None
    since = data.get("since_seq")
    if since is not None and (type(since) is not int or since < 0):
        return None
    if not data.keys() <= {"session_id", "since_seq"}:
        return None  # consent, location, unknown keys: the model decides
    return {"session_id": sid} if since is None else {"session_id": sid, "since_seq": since}


def _fast_session_ref(data: dict[str, Any]) -> dict[str, Any] | None:
    """A request that names its session and nothing else (`video.start`,
    `video.end`, `session.notarize`)."""
    sid = data.get("session_id")
    if len(data) != 1 or type(sid) is not str or not CANONICAL_UUID.fullmatch(sid):
        return None
    return {"session_id": sid}


def _fast_checks_record(data: dict[str, Any]) -> dict[str, Any] | None:
    sid = data.get("session_id")
    a, b = data.get("comprehension_confirmed"), data.get("duress_check_passed")
    if (
        len(data) != 3
        or type(sid) is not str
        or not CANONICAL_UUID.fullmatch(sid)
        or type(a) is not bool
        or type(b) is not bool
    ):
        return None
    return {"session_id": sid, "comprehension_confirmed": a, "duress_check_passed": b}


# Hand-written checks for the most frequent requests; they accept only input
# the model accepts, with the same result, and defer everything else to it.
_FAST: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "session.join": _fast_session_join,
    "checks.record": _fast_checks_record,
    "video.start": _fast_session_ref,
    "video.end": _fast_session_ref,
    "session.notarize": _fast_session_ref,
}


def parse(kind: str, data: Any, ident: Identity) -> tuple[Spec, dict[str, Any], str]:
    """Validate a request; return its spec, clean data and actor id, or raise
    ProtocolError in the contract's order: bad_request, forbidden, not_found."""
    return parse_as(REQUESTS.get(kind), kind, data, ident)


def parse_as(
    spec: Spec | None, kind: str, data: Any, ident: Identity
) -> tuple[Spec, dict[str, Any], str]:
    """`parse`, with the spec of `kind` already looked up (None: unknown)."""
    if spec is None:
        raise ProtocolError("bad_request", f"unknown type {kind!r}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError("bad_request", "data must be an object")
    fast = _FAST.get(kind)
    clean = fast(data) if fast is not None else None
    if clean is not None:
        _authorize(spec, kind, ident)
        return spec, clean, session_address(clean["session_id"])
    return parse_with_model(spec, kind, data, ident)


def parse_with_model(
    spec: Spec, kind: str, data: dict[str, Any], ident: Identity
) -> tuple[Spec, dict[str, Any], str]:
    try:
        model = spec.model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "data"
        raise ProtocolError("bad_request", f"{where}: {first['msg']}") from None
    _authorize(spec, kind, ident)
    actor = spec.route(ident, model)
    fields = model.__dict__
    if any(isinstance(v, BaseModel | list) for v in fields.values()):
        clean = model.model_dump(exclude_none=True)
    else:  # flat: the same as model_dump(exclude_none=True), without its cost
        clean = {k: v for k, v in fields.items() if v is not None}
    if "session_id" in clean:
        clean["session_id"] = actor.split(":", 1)[1]
    return spec, clean, actor


def _authorize(spec: Spec, kind: str, ident: Identity) -> None:
    if ident.role not in spec.roles:
        raise ProtocolError("forbidden", f"{kind} is not allowed for role {ident.role}")
    if spec.needs_kyc and not ident.kyc_verified:
        raise ProtocolError("forbidden", "complete identity verification (KYC) first")

"""What the transport must know about a request type: its `Spec`, and the
target resolutions (which actor a request goes to).

The connection (`gateway.connection`) reads these fields and nothing else
about a request type: it never compares request types. A new request type is
a `Spec` in `gateway.requests.REQUESTS` (its data shape, roles, target, and
the flags below that apply to it) and a handler `on_<message>` on its actor.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from core.errors import ProtocolError
from core.ids import (
    MATCHMAKER,
    is_identifier,
    notary_address,
    session_address,
    session_id_for,
)
from core.messages import Role
from gateway.auth import Identity

ALL: tuple[Role, ...] = ("customer", "enp", "admin")

# Target resolution: (who sends it, its validated data) -> the actor's address.
Target = Callable[[Identity, Any], str]


@dataclass(frozen=True, slots=True)
class Spec:
    """One request type. Shape and roles are checked in `gateway.requests`;
    the rest tells the connection what to do around the ask."""

    model: type[BaseModel]  # the data's shape
    roles: tuple[Role, ...]  # who may send it (else `forbidden`)
    route: Target  # the actor that handles it
    message: str = ""  # the actor's message kind; defaults to the request type
    # Refused (`forbidden`) unless the sender's identity is KYC-verified.
    needs_kyc: bool = False
    # The request may start following its target's topic: the connection
    # subscribes to it (and holds its events) before the ask, so nothing the
    # request causes is missed, and releases it after the reply.
    follows_target_first: bool = False
    # A topic of ephemeral events the connection subscribes to before the ask,
    # and keeps for its lifetime if the request succeeds.
    subscribes: str | None = None
    # Cluster mode: the connection holds a presence lease on the target's id
    # from before the ask until it closes (or the request fails).
    holds_lease: bool = False
    # It opens a session that waits for a notary: counted against the
    # customer's ENF_MAX_OPEN_REQUESTS around the ask (gateway.limits).
    opens_request: bool = False
    # Answered by the gateway itself, without an actor: the reply's data.
    answer: Callable[[], dict[str, Any]] | None = None
    name: str = ""  # the request type (audit action, metrics label); set by `table`
    span: str = field(init=False, default="")  # the tracing span of the ask

    def __post_init__(self) -> None:
        if not self.message:
            object.__setattr__(self, "message", self.name)
        object.__setattr__(self, "span", f"enf.request {self.name}")


def table(specs: dict[str, Spec]) -> dict[str, Spec]:
    """The request table: each spec named for its request type."""
    return {name: replace(spec, name=name) for name, spec in specs.items()}


# -- targets ---------------------------------------------------------------------

CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def own_notary(ident: Identity, _: Any) -> str:
    return notary_address(ident.user_id)


def session(_: Identity, data: Any) -> str:
    sid = data.session_id
    if CANONICAL_UUID.fullmatch(sid):
        return session_address(sid)
    try:
        canonical = str(uuid.UUID(sid))
    except ValueError:
        raise ProtocolError("not_found", "no such session") from None
    return session_address(canonical)


def new_session(ident: Identity, data: Any) -> str:
    return session_address(session_id_for(ident.user_id, data.idempotency_key))


def matchmaker(_: Identity, __: Any) -> str:
    return MATCHMAKER


def named_session(data: Any) -> str | None:
    """The session a refused request's raw data names, if it names one (what
    its audit row is filed against): only an identifier (PROTOCOL §8) is
    kept, so nothing a client made up reaches the audit row's resource."""
    sid = data.get("session_id") if isinstance(data, dict) else None
    return session_address(sid) if isinstance(sid, str) and is_identifier(sid) else None

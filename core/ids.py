"""Identifiers and actor addresses.

An actor is addressed as `<kind>:<id>` (`session:<uuid>`, `notary:<id>`) or by
a bare name (`matchmaker`); its shard is a pure function of that address.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Final

from core.errors import ProtocolError

SESSION: Final = "session"
NOTARY: Final = "notary"
MATCHMAKER: Final = "matchmaker"

# The topic of ephemeral presence events (notary.presence), for subscribers.
PRESENCE_TOPIC: Final = "presence"

# The kinds of actors the hosts know, by the first part of their address.
ACTOR_KINDS: Final = (SESSION, NOTARY, MATCHMAKER)

_NAMESPACE = uuid.UUID("5b0f6f1e-6b0e-4c57-9d0a-2f1c1a3e0e11")


def session_id_for(customer_id: str, idempotency_key: str) -> str:
    """The session a customer's idempotency key names: the same key always
    reaches the same actor, which makes `session.request` idempotent."""
    return str(uuid.uuid5(_NAMESPACE, f"{customer_id}\n{idempotency_key}"))


def session_address(session_id: str) -> str:
    return f"{SESSION}:{session_id}"


def notary_address(notary_id: str) -> str:
    return f"{NOTARY}:{notary_id}"


def kind_of(address: str) -> str:
    return address.split(":", 1)[0]


def shard_of(address: str, shards: int) -> int:
    """Stable across processes (unlike `hash()`), so every node agrees."""
    digest = hashlib.blake2b(address.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


# PROTOCOL §8: identifiers of users, sessions, notaries, documents and offers
# (token `sub`, ids in requests and in paths) are 1-128 ASCII letters, digits
# and `-_.@`. One rule, applied at the edge: nothing else reaches a file name,
# a key, a log line or a database row.
IDENTIFIER = re.compile(r"[A-Za-z0-9._@-]{1,128}")
MAX_REQUEST_ID = 128


def is_identifier(value: object) -> bool:
    """The rule above; `.` and `..` are refused too (they name folders)."""
    return (
        isinstance(value, str)
        and IDENTIFIER.fullmatch(value) is not None
        and value not in (".", "..")
    )


def check_identifier(value: object, what: str) -> str:
    """`value` if it is an identifier, else `bad_request` naming `what`."""
    if not is_identifier(value):
        raise ProtocolError("bad_request", f"{what} must be 1-128 ASCII letters, digits or -_.@")
    assert isinstance(value, str)
    return value


def is_request_id(value: object) -> bool:
    """A request `id`: a string of at most 128 characters without NUL or
    unpaired surrogates (PROTOCOL §8)."""
    if not isinstance(value, str) or len(value) > MAX_REQUEST_ID or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

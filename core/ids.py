"""Identifiers and actor addresses.

An actor is addressed as `<kind>:<id>` (`session:<uuid>`, `notary:<id>`) or by
a bare name (`matchmaker`); its shard is a pure function of that address.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

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

"""Journal rows and the hash chain that links them, what one append carries
to the journal, and the errors an append can end with."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from persistence.projections import Projection

GENESIS_HASH = "0" * 64


class Unavailable(Exception):
    """The database could not make the append durable; nothing was applied."""


class Refused(Unavailable):
    """The database refused the change itself (not an outage): trying again
    will not help. Nothing was applied."""


# What a lost or refused database connection raises (the database down, a cut
# connection, the pool closing at shutdown): an outage, not a bug.
CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the database is out of reach (log a warning and
    retry), False for a bug (log the traceback)."""
    return isinstance(exc, (Unavailable, *CONNECTION_ERRORS)) and not isinstance(exc, Refused)


class StaleActivation(Exception):
    """Another activation of the same actor appended first; this one must stop."""


class Fenced(Exception):
    """The shard's epoch moved on: a newer incarnation of the shard owns its
    actors, and this one may not write any more."""


# The canonical text is `json.dumps(sort_keys, compact, ensure_ascii=False)`;
# hashes already stored cover it byte for byte. orjson writes the same text
# for str, int (64 bits), bool, None, lists, tuples and dicts with str keys,
# at a tenth of the cost, but not floats (1e-05 is "0.00001" to orjson) nor
# anything else it knows and `json` refuses (datetimes, UUIDs, enums,
# subclasses): those take `json`'s way.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


_SCALARS = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> bool:
    """Only the types that orjson writes as `json` does (no float)."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _SCALARS and not _plain(v)):
                return False
        return True
    if t is list or t is tuple:
        for v in value:
            if type(v) not in _SCALARS and not _plain(v):
                return False
        return True
    return t in _SCALARS


def canonical_json(value: Any) -> str:
    """The text hashed. A float that is not finite raises ValueError: jsonb
    cannot hold it, so no hash may cover it (the jsonb encoder, orjson, would
    store it as null)."""
    try:
        if _plain(value):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, RecursionError):
        pass  # past 64 bits, a lone surrogate, too deep: `json` says what it makes of it
    text: str = _CANONICAL(value)
    return text


# Above this, Python writes a float with an exponent and jsonb gives it back
# as an integer (numeric has no exponent in its output).
_EXPONENT_FROM = 1e16


def jsonb_value(value: Any) -> Any:
    """`value` as jsonb will give it back (so its hash survives the trip);
    a float that is not finite raises ValueError (jsonb refuses it)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("jsonb cannot hold NaN or infinity")
        if value == 0:
            return 0.0  # numeric has no -0
        return int(value) if value.is_integer() and abs(value) >= _EXPONENT_FROM else value
    if isinstance(value, dict):
        return {k: jsonb_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonb_value(v) for v in value]
    return value


def chain_hash(
    prev_hash: str, actor_id: str, seq: int, name: str, data: dict[str, Any], at: str
) -> str:
    """hash = sha256(prev_hash || canonical row) — ARCHITECTURE.md, Durability."""
    row = canonical_json(
        {
            "actor_id": actor_id,
            "seq": seq,
            "name": name,
            "data": data,
            "at": at,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256((prev_hash + row).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    actor_id: str
    seq: int
    name: str
    data: dict[str, Any]
    at: str
    prev_hash: str
    hash: str

    @classmethod
    def make(
        cls, actor_id: str, seq: int, name: str, data: dict[str, Any], at: str, prev_hash: str
    ) -> StoredEvent:
        """The event as the journal will give it back (`jsonb_value`: a float
        jsonb returns as an integer is one already), hashed."""
        data = jsonb_value(data)
        return cls(
            actor_id,
            seq,
            name,
            data,
            at,
            prev_hash,
            chain_hash(prev_hash, actor_id, seq, name, data, at),
        )

    def wire(self) -> dict[str, Any]:
        """The event as clients see it (PROTOCOL §3); the topic is the actor id."""
        return {
            "type": "event",
            "topic": self.actor_id,
            "seq": self.seq,
            "name": self.name,
            "data": self.data,
            "at": self.at,
        }

    def with_hashes(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "data": self.data,
            "at": self.at,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    user_id: str
    request_id: str
    fingerprint: str
    reply: dict[str, Any]


@dataclass(slots=True)
class Append:
    actor_id: str
    events: Sequence[StoredEvent] = ()
    # Rows of batched projection tables, and (sql, args) statements, that
    # must commit with the events.
    projections: Sequence[Projection] = ()
    statements: Sequence[tuple[str, tuple[Any, ...]]] = ()
    idempotency: Sequence[IdempotencyRecord] = ()
    snapshot: tuple[int, dict[str, Any]] | None = None
    future: asyncio.Future[None] | None = field(default=None, repr=False)

    def settle(self, exc: Exception | None) -> None:
        """Resolve the appender's wait: committed (None) or failed with `exc`."""
        if self.future is None or self.future.done():
            return
        if exc is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(exc)

"""JSON Schema pieces shared by the contract's two documents: the OpenAPI
document of the HTTP API (`gateway.http.openapi`) and the AsyncAPI document
of the WebSocket (`gateway.http.asyncapi`). Both carry the session snapshot
(PROTOCOL §4), identifiers (§8) and pydantic models' JSON Schema.

Every document lifts its models' `$defs` into `components.schemas` and
refers to them as `#/components/schemas/<name>`.
"""

from __future__ import annotations

from typing import Any

from actors import lifecycle as L

Json = dict[str, Any]

# PROTOCOL §8: ids in paths and queries, 1-128 of these characters ("." and ".." refused).
IDENTIFIER_PATTERN = "^[A-Za-z0-9._@-]{1,128}$"
IDENTIFIER: Json = {
    "type": "string",
    "pattern": IDENTIFIER_PATTERN,
    "not": {"enum": [".", ".."]},
}
SESSION_ID: Json = {
    **IDENTIFIER,
    "format": "uuid",
    "description": "A session id (a UUID; another identifier names no session: 404).",
}
ISO_TIME: Json = {"type": "string", "description": "ISO 8601 (UTC when no zone is given)."}

STRING: Json = {"type": "string"}
OBJECT: Json = {"type": "object"}
NULLABLE_STRING: Json = {"type": ["string", "null"]}
NUMBER_OR_NULL: Json = {"type": ["number", "null"]}


def obj(required: list[str], **properties: Json) -> Json:
    return {"type": "object", "required": required, "properties": properties}


def array(items: Json) -> Json:
    return {"type": "array", "items": items}


def map_of(values: Json) -> Json:
    return {"type": "object", "additionalProperties": values}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


PARTICIPANT = obj(
    ["user_id", "role", "online"],
    user_id=STRING,
    role={"enum": ["customer", "enp"]},
    online={"type": "boolean"},
)

# The session snapshot of PROTOCOL §4 (actors.session.view.public_view):
# `checks` and `recording` are objects whose keys the contract leaves open.
SNAPSHOT = obj(
    ["session_id", "state"],
    session_id=STRING,
    state={"enum": list(L.STATES)},
    customer_id=NULLABLE_STRING,
    enp_id=NULLABLE_STRING,
    document={"type": ["object", "null"]},
    amount=NUMBER_OR_NULL,
    platform_fee=NUMBER_OR_NULL,
    enp_fee=NUMBER_OR_NULL,
    participants=array(PARTICIPANT),
    checks=OBJECT,
    signed={"type": "boolean", "description": "The principal has signed (`act.sign`)."},
    sealed={"type": "boolean", "description": "The notary has sealed (`act.seal`)."},
    recording={"type": ["object", "null"]},
    envelope_id=NULLABLE_STRING,
    created_at=NULLABLE_STRING,
    seq={"type": "integer", "minimum": 0},
    paused={"type": ["object", "null"]},
    reason=NULLABLE_STRING,
    join_window_ends_at=NULLABLE_STRING,
)


def lift_defs(schema: Json, schemas: Json) -> Json:
    """`schema` (a model's JSON Schema) without its `$defs`, which go to
    `schemas`; a name already there must have the same schema."""
    for name, definition in schema.pop("$defs", {}).items():
        if schemas.setdefault(name, definition) != definition:
            raise ValueError(f"two different schemas named {name!r}")
    return schema

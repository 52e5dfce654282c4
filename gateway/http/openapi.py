"""An OpenAPI 3.1 document of every HTTP route of the server (PROTOCOL §6,
§8): paths, methods, parameters, request bodies (the pydantic models' JSON
Schema where a route validates its body with one), and responses, the JSON
error body `{"error": {"code", "message"}}` with its statuses included.

Checked against the app's routes (tests/unit/test_fuzz_openapi_routes.py),
fuzzed by schemathesis (tests/functional/test_fuzz_http.py), served at
`/openapi.json`."""

from __future__ import annotations

import copy
import functools
from typing import cast

from aiohttp import web

from actors import lifecycle as L
from core.errors import HTTP_STATUS
from gateway.http.directory import Favorites, NotaryProfile
from gateway.http.json_schema import (
    IDENTIFIER,
    ISO_TIME,
    NULLABLE_STRING,
    OBJECT,
    SESSION_ID,
    SNAPSHOT,
    STRING,
    Json,
    array,
    lift_defs,
    map_of,
    obj,
    ref,
)
from gateway.requests import Model

__all__ = ["Json", "openapi_document", "routes"]

Responses = dict[int, Json]  # by status

FORMAT: Json = {"type": "string", "enum": ["json", "csv"], "default": "json"}
TEXT = STRING
DELIVERY_STATUSES = ["pending", "delivered", "dead"]


def _json(schema: Json, description: str = "OK") -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(where: str, name: str, schema: Json) -> Json:
    return {"in": where, "name": name, "required": where == "path", "schema": schema}


# Every refusal's body, with its statuses (but 500: never part of the contract).
CODES = [c for c in HTTP_STATUS if c != "internal"]
ERROR = obj(["error"], error=obj(["code", "message"], code={"enum": CODES}, message=STRING))
REASONS = {
    400: "Bad request: malformed JSON, a missing or mistyped field, an id that is not one.",
    401: "No token, or a refused one.",
    403: "Not allowed for this caller.",
    404: "No such resource, or one the caller may not see.",
    409: "Conflict: the resource is in the wrong state.",
    413: "The body is over 65,536 bytes.",
    429: "Too many requests: retry after `Retry-After` seconds.",
    503: "A dependency (the database) is unavailable: nothing was applied.",
}
AUTHED = (400, 401, 403, 404, 429, 503)

# PROTOCOL §4 (the snapshot), §8 (envelopes, journal, deliveries).
SCHEMAS: Json = {
    "Error": ERROR,
    "Snapshot": SNAPSHOT,
    "SignedEnvelope": obj(
        ["envelope", "signature", "key_id"],
        envelope=OBJECT,
        signature={"type": "string", "description": "base64 Ed25519 signature"},
        key_id=STRING,
    ),
    "Delivery": obj(
        ["id", "status"], id=STRING, status={"enum": DELIVERY_STATUSES}, payload=OBJECT
    ),
    "Readiness": obj(["ready", "checks"], ready={"type": "boolean"}, checks=map_of(STRING)),
    "JournalEvent": obj(
        ["seq", "name", "data", "at", "prev_hash", "hash"],
        seq={"type": "integer", "minimum": 1},
        name=STRING,
        data=OBJECT,
        at=STRING,
        prev_hash=NULLABLE_STRING,
        hash=STRING,
    ),
}


def _op(
    route: str,
    summary: str,
    ok: Json | Responses,
    *,
    errors: tuple[int, ...] = AUTHED,
    public: bool = False,
    params: tuple[Json, ...] = (),
    body: Json | None = None,
) -> tuple[str, str, Json]:
    """`route` ("GET /path"): (path, method, operation). `ok`: the 200 JSON
    schema, or {status: response} for anything else."""
    method, path = route.split(" ")
    status_keyed = all(isinstance(k, int) for k in ok)
    responses = cast(Responses, ok) if status_keyed else {200: _json(cast(Json, ok))}
    op: Json = {"summary": summary, "security": [] if public else [{"bearer": []}]}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
        errors = tuple(sorted({*errors, 413}))
    op["responses"] = {str(k): v for k, v in responses.items()} | {
        str(e): {"$ref": f"#/components/responses/E{e}"} for e in errors
    }
    return path, method.lower(), op


def _model(model: type[Model], schemas: Json) -> Json:
    """`model`'s JSON Schema as a component (its nested models too): a $ref to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas[model.__name__] = lift_defs(schema, schemas)
    return {"application/json": {"schema": ref(model.__name__)}}


def _text(media: str) -> Responses:
    return {200: {"description": "OK", "content": {media: {"schema": TEXT}}}}


PATH_ID = (_param("path", "id", IDENTIFIER),)
SESSION = (_param("path", "id", SESSION_ID),)
LINK = (_param("query", "expires", STRING), _param("query", "sig", STRING))
LINKED = (400, 403, 404, 429, 503)


def _export(json_schema: Json) -> Responses:
    """A JSON export, or CSV with `format=csv`."""
    content = {"application/json": {"schema": json_schema}, "text/csv": {"schema": TEXT}}
    return {200: {"description": "OK (`format=csv`: CSV)", "content": content}}


def _operations(schemas: Json) -> list[tuple[str, str, Json]]:
    ready = ref("Readiness")
    return [
        _op("GET /health", "The process answers", obj(["status"]), public=True, errors=()),
        _op(
            "GET /ready",
            "Its database (and Redis, Ray) answer, and it is not shutting down",
            {200: _json(ready), 503: _json(ready, "Not ready: a check failed, or shutting down")},
            public=True,
            errors=(),
        ),
        _op("GET /metrics", "Prometheus text", _text("text/plain"), public=True, errors=()),
        _op(
            "PUT /v1/notaries/{id}",
            "Admins: a notary's profile",
            obj(["notary_id", "profile"], notary_id=STRING, profile=OBJECT),
            params=PATH_ID,
            body=_model(NotaryProfile, schemas),
        ),
        _op(
            "PUT /v1/customers/{id}/favorites",
            "Admins and that customer: the customer's favorite notaries",
            obj(["customer_id", "notary_ids"], customer_id=STRING, notary_ids=array(STRING)),
            params=PATH_ID,
            body=_model(Favorites, schemas),
        ),
        _op(
            "GET /v1/sessions",
            "Admins: the latest sessions",
            obj(["sessions"], sessions=array(ref("Snapshot"))),
            params=(
                _param("query", "state", {"type": "string", "enum": list(L.STATES)}),
                _param("query", "limit", {"type": "integer", "description": "Clamped to 1-1000."}),
            ),
        ),
        _op(
            "GET /v1/sessions/{id}",
            "Participants and admins: the snapshot",
            ref("Snapshot"),
            params=SESSION,
        ),
        _op(
            "GET /v1/sessions/{id}/journal",
            "Participants and admins: the hash-chained journal",
            obj(["session_id", "events"], session_id=STRING, events=array(ref("JournalEvent"))),
            params=SESSION,
        ),
        _op(
            "GET /v1/sessions/{id}/recording",
            "Participants and admins: a short-lived link to the recording",
            obj(["url", "expires_at"], url=STRING, expires_at=ISO_TIME),
            params=SESSION,
        ),
        _op(
            "GET /v1/recordings/{id}/{name}",
            "A file:// recording, for holders of an unexpired signed link",
            _text("video/x-matroska"),
            public=True,
            params=(*SESSION, _param("path", "name", IDENTIFIER), *LINK),
            errors=LINKED,
        ),
        _op(
            "POST /v1/envelopes/verify",
            "Anyone: whether a signed envelope verifies",
            obj(["valid"], valid={"type": "boolean"}, reason=STRING),
            public=True,
            body={"application/json": {"schema": ref("SignedEnvelope")}},
            errors=(400, 429, 503),
        ),
        _op(
            "GET /v1/envelopes/{id}",
            "Participants and admins: the signed TRUTH envelope",
            ref("SignedEnvelope"),
            params=PATH_ID,
        ),
        _op(
            "GET /v1/envelopes/{id}/shared",
            "Holders of a shared link: the signed envelope",
            ref("SignedEnvelope"),
            public=True,
            params=(*PATH_ID, *LINK),
            errors=LINKED,
        ),
        _op(
            "GET /v1/keys",
            "Anyone: the public keys that verify envelopes",
            obj(["keys"], keys=array(obj(["key_id", "alg", "public_key"]))),
            public=True,
            errors=(429,),
        ),
        _op(
            "GET /v1/notaries/{id}/book",
            "That notary and admins: the notarial book of a month",
            _export(obj(["notary_id", "month", "entries"], entries=array(OBJECT))),
            params=(
                *PATH_ID,
                _param("query", "month", {"type": "string", "description": "YYYY-MM"}),
                _param("query", "format", FORMAT),
            ),
        ),
        _op(
            "GET /v1/audit",
            "Admins: the audit log",
            _export(obj(["entries"], entries=array(OBJECT))),
            params=(
                _param("query", "from", ISO_TIME),
                _param("query", "to", ISO_TIME),
                _param("query", "user_id", IDENTIFIER),
                _param("query", "session_id", IDENTIFIER),
                _param("query", "format", FORMAT),
            ),
        ),
        _op(
            "GET /v1/deliveries",
            "Admins: outgoing events (the latest 500)",
            obj(["deliveries"], deliveries=array(ref("Delivery"))),
            params=(
                _param("query", "status", {"type": "string", "enum": DELIVERY_STATUSES}),
                _param("query", "session_id", IDENTIFIER),
            ),
        ),
        _op(
            "GET /v1/deliveries/{id}",
            "Admins: one outgoing event",
            ref("Delivery"),
            params=PATH_ID,
        ),
        _op(
            "POST /v1/deliveries/{id}/replay",
            "Admins: a dead letter back to pending",
            ref("Delivery"),
            params=PATH_ID,
            errors=(*AUTHED, 409),
        ),
        _op(
            "GET /v1/ops/summary",
            "Admins: the queue, sessions by state, and (cluster mode) shards and gateways",
            obj(
                ["at", "queue", "sessions_by_state", "cluster"],
                at=ISO_TIME,
                queue=obj(["requests_waiting", "offers_open", "match_latency"]),
                sessions_by_state=map_of({"type": "integer", "minimum": 0}),
                cluster={"type": ["object", "null"], "description": "null on a single node"},
            ),
        ),
        _op(
            "POST /webhooks/twilio/status",
            "Twilio: room and recording callbacks (X-Twilio-Signature checked)",
            {204: {"description": "Taken"}},
            public=True,
            params=(_param("header", "X-Twilio-Signature", STRING),),
            body={"application/x-www-form-urlencoded": {"schema": map_of(STRING)}},
            errors=LINKED,
        ),
        _op(
            "GET /v1/ws",
            "The WebSocket (PROTOCOL §3): a token in the header, or in the first frame",
            {101: {"description": "Switching to the WebSocket"}},
            errors=(400, 401, 429, 503),
        ),
        _op("GET /openapi.json", "Anyone: this document", OBJECT, public=True, errors=(429,)),
        _op(
            "GET /asyncapi.json",
            "Anyone: the AsyncAPI 3.0 document of the WebSocket (PROTOCOL §3-5, §8)",
            OBJECT,
            public=True,
            errors=(429,),
        ),
        _op(
            "GET /docs",
            "Anyone: this document in Swagger UI, served from the server (no CDN)",
            _text("text/html"),
            public=True,
            errors=(429,),
        ),
        _op(
            "GET /docs/static/{filename}",
            "Swagger UI's files (the swagger-ui-py package's), by name",
            {200: {"description": "A file of Swagger UI (CSS, JavaScript, image, source map)"}},
            public=True,
            params=(_param("path", "filename", STRING),),
            errors=(404, 429),
        ),
        _op("GET /", "The web console", _text("text/html"), public=True, errors=(429,)),
        _op(
            "GET /console/{filename}",
            "The web console's files",
            {
                200: {"description": "A file of the console"},
                403: {"description": "Not a file of the console"},
                404: {"description": "No such file (aiohttp's static files: no JSON body)"},
            },
            public=True,
            params=(_param("path", "filename", STRING),),
            errors=(429,),
        ),
    ]


def _error_responses() -> Json:
    out: Json = {}
    for status, reason in REASONS.items():
        response = _json(ref("Error"), reason)
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}}
        out[f"E{status}"] = response
    return out


@functools.cache
def _document() -> Json:
    schemas: Json = copy.deepcopy(SCHEMAS)
    paths: Json = {}
    for path, method, op in _operations(schemas):
        paths.setdefault(path, {})[method] = op
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ENF session server",
            "version": "1",
            "description": "The HTTP API of the wire contract (PROTOCOL.md §6, §8).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "securitySchemes": {"bearer": bearer},
        },
    }


def openapi_document() -> Json:
    """The document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    """Anyone: this document."""
    return web.json_response(_document())

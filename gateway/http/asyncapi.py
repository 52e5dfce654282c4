"""An AsyncAPI 3.0 document of the WebSocket contract (PROTOCOL §3-5, §8),
served at `/asyncapi.json`: the channel `/v1/ws` with its two subprotocols,
`hello` and `welcome`, every request type with its reply (the ok reply and
the error reply) and every event.

Generated, not written: each request's `data` schema is the JSON Schema of
the pydantic model that validates it (gateway.requests.REQUESTS); each ok
reply's and event's `data` is that of its type in gateway.wire_schema. The
document takes the server's side: it `receive`s requests (each with a
`reply`) and `send`s events. Payloads are JSON Schema (draft-07 keywords);
`#/components/schemas/…` holds every schema they refer to.

Objects are open (a client ignores a key it does not know);
tests/functional/test_asyncapi_frames.py holds the server to the documented
keys, frame by frame, over a whole lifecycle in both subprotocols.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, get_args

from aiohttp import web
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from core.errors import ErrorCode
from gateway import requests as R
from gateway.http.asyncapi_text import ABOUT, CHANNEL, CLOSE_CODES, INFO, SUBPROTOCOLS
from gateway.http.json_schema import IDENTIFIER, ISO_TIME, SNAPSHOT, STRING, Json, obj, ref
from gateway.wire_schema import EVENTS, REPLIES, Welcome

__all__ = ["Json", "asyncapi_document", "routes"]

SCHEMA_FORMAT = "application/schema+json;version=draft-07"
ADDRESS = "/v1/ws"
CHANNEL_REF = {"$ref": "#/channels/ws"}

# Request ids (PROTOCOL §8): a string of 1-128 characters, or an integer.
REQUEST_ID: Json = {
    "anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "integer"}],
    "description": "The request's `id`, unique per connection",
}
WS_ERROR = obj(["code", "message"], code={"enum": list(get_args(ErrorCode))}, message=STRING)


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, with what the models' validators check that
    JSON Schema can say: identifiers (PROTOCOL §8) get their pattern."""

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        out = super().function_after_schema(schema)
        if schema["function"]["function"] is R._identifier:
            out = {**out, "pattern": IDENTIFIER["pattern"], "not": IDENTIFIER["not"]}
        return out


def _data_schemas(schemas: Json) -> dict[tuple[str, str], Json]:
    """The `data` schema of every request, ok reply and event, by (what,
    name), with the definitions they refer to added to `schemas`."""
    inputs: list[tuple[tuple[str, str], Any, TypeAdapter[Any]]] = [
        (("request", kind), "validation", TypeAdapter(spec.model))
        for kind, spec in R.REQUESTS.items()
    ]
    inputs += [(("reply", kind), "validation", TypeAdapter(REPLIES[kind])) for kind in R.REQUESTS]
    inputs += [(("event", e.name), "validation", TypeAdapter(e.data)) for e in EVENTS]
    inputs.append((("welcome", ""), "validation", TypeAdapter(Welcome)))
    by_key, definitions = TypeAdapter.json_schemas(
        inputs, ref_template="#/components/schemas/{model}", schema_generator=_Generator
    )
    for name, definition in definitions.get("$defs", {}).items():
        if name in schemas:
            raise ValueError(f"a schema named {name!r} twice")
        schemas[name] = definition
    return {key: schema for (key, _mode), schema in by_key.items()}


def _payload(schema: Json) -> Json:
    return {"schemaFormat": SCHEMA_FORMAT, "schema": schema}


def _message(name: str, title: str, summary: str, payload: Json, **more: Json) -> Json:
    return {"name": name, "title": title, "summary": summary, "payload": _payload(payload)} | more


def _requires_data(data: Json, schemas: Json) -> bool:
    target = schemas[data["$ref"].rsplit("/", 1)[1]]
    return bool(target.get("required"))


def _request_messages(data: dict[tuple[str, str], Json], schemas: Json) -> Json:
    """`request.<type>` and `reply.<type>` for every request type."""
    out: Json = {}
    for kind, spec in R.REQUESTS.items():
        body = data[("request", kind)]
        if not _requires_data(body, schemas):
            body = {"anyOf": [body, {"type": "null"}], "description": "absent or null: {}"}
        required = (
            ["id", "type", "data"] if _requires_data(data[("request", kind)], schemas) else []
        )
        payload = obj(required or ["id", "type"], id=ref("RequestId"), type={"const": kind})
        payload["properties"]["data"] = body
        who = ", ".join(spec.roles)
        out[f"request.{kind}"] = _message(
            kind,
            f"{kind} (request)",
            f"{ABOUT[kind]} Who: {who}.",
            payload,
            correlationId={"$ref": "#/components/correlationIds/request"},
        )
        reply = obj(["re", "ok", "data"], re=ref("RequestId"), ok={"const": True})
        reply["properties"]["data"] = data[("reply", kind)]
        out[f"reply.{kind}"] = _message(
            f"{kind}.reply",
            f"{kind} (ok reply)",
            f"The ok reply to {kind}.",
            reply,
            correlationId={"$ref": "#/components/correlationIds/reply"},
        )
    return out


def _event_messages(data: dict[tuple[str, str], Json]) -> Json:
    out: Json = {}
    for e in EVENTS:
        required = ["type", "topic", *(["seq"] if e.durable else []), "name", "data", "at"]
        payload = obj(
            required,
            type={"const": "event"},
            topic={"type": "string", "pattern": e.topic},
            name={"const": e.name},
            data=data[("event", e.name)],
            at=ISO_TIME,
        )
        if e.durable:
            seq = {"type": "integer", "minimum": 1, "description": "Per topic, from 1, no gaps"}
            payload["properties"]["seq"] = seq
            summary = f"A durable event on {e.topic[1:]}…: journaled, with `seq`, replayed."
        else:
            payload["not"] = {"required": ["seq"]}
            summary = "An ephemeral event: no `seq`, not stored, never replayed."
        out[f"event.{e.name}"] = _message(e.name, f"{e.name} (event)", summary, payload)
    return out


def _messages(schemas: Json) -> Json:
    data = _data_schemas(schemas)
    hello = obj(["type", "data"], type={"const": "hello"}, data=obj(["token"], token=STRING))
    welcome = obj(["type", "data"], type={"const": "welcome"}, data=data[("welcome", "")])
    error = obj(["re", "ok", "error"], ok={"const": False}, error=ref("WsError"))
    error["properties"]["re"] = {"anyOf": [ref("RequestId"), {"type": "null"}]}
    return {
        "hello": _message(
            "hello", "hello", "The first frame, for a client without a header token.", hello
        ),
        "welcome": _message(
            "welcome", "welcome", "The server's first frame once authenticated.", welcome
        ),
        **_request_messages(data, schemas),
        "reply.error": _message(
            "error",
            "error reply",
            "A refused request (`re`: its id; null when the frame was unreadable).",
            error,
            correlationId={"$ref": "#/components/correlationIds/reply"},
        ),
        **_event_messages(data),
    }


def _message_ref(name: str) -> Json:
    return {"$ref": f"#/channels/ws/messages/{name}"}


def _operation(action: str, summary: str, messages: list[str], **more: Any) -> Json:
    op: Json = {"action": action, "channel": CHANNEL_REF, "summary": summary}
    return op | {"messages": [_message_ref(m) for m in messages]} | more


def _operations() -> Json:
    ops: Json = {
        "hello": _operation(
            "receive",
            "Authenticate by the first frame (within 5 s; refused: close 4401)",
            ["hello"],
            reply={"channel": CHANNEL_REF, "messages": [_message_ref("welcome")]},
        ),
        "welcome": _operation(
            "send", "Welcome an authenticated connection (header token or hello)", ["welcome"]
        ),
    }
    for kind, spec in R.REQUESTS.items():
        ops[kind] = _operation(
            "receive",
            ABOUT[kind],
            [f"request.{kind}"],
            reply={
                "channel": CHANNEL_REF,
                "messages": [_message_ref(f"reply.{kind}"), _message_ref("reply.error")],
            },
            **{"x-roles": list(spec.roles)},
        )
    ops["unreadable"] = _operation(
        "send",
        "Refuse a frame that is not a request (undecodable, not an object, no valid id)",
        ["reply.error"],
    )
    for e in EVENTS:
        kind = "durable" if e.durable else "ephemeral"
        ops[f"event.{e.name}"] = _operation(
            "send", f"The {kind} event {e.name}", [f"event.{e.name}"]
        )
    return ops


@functools.cache
def _document() -> Json:
    schemas: Json = {"RequestId": REQUEST_ID, "WsError": WS_ERROR, "Snapshot": SNAPSHOT}
    messages = _messages(schemas)
    channel = {
        "address": ADDRESS,
        **CHANNEL,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "ws": {
                "method": "GET",
                "headers": obj(
                    [],
                    Authorization={"type": "string", "pattern": "^Bearer "},
                    **{"Sec-WebSocket-Protocol": {"enum": list(SUBPROTOCOLS)}},
                ),
                "bindingVersion": "0.1.0",
            }
        },
        "x-subprotocols": SUBPROTOCOLS,
        "x-close-codes": CLOSE_CODES,
    }
    bearer = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "In the upgrade's Authorization header, or as hello's data.token.",
    }
    server = {
        "host": "{host}",
        "protocol": "ws",
        "description": "The server (run.py); ENF_HOST:ENF_PORT.",
        "variables": {"host": {"default": "127.0.0.1:8080"}},
        "security": [{"$ref": "#/components/securitySchemes/bearer"}],
    }
    correlation = "$message.payload#/"
    return {
        "asyncapi": "3.0.0",
        "info": INFO,
        "defaultContentType": "application/json",
        "servers": {"enf": server},
        "channels": {"ws": channel},
        "operations": _operations(),
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {"bearer": bearer},
            "correlationIds": {
                "request": {"location": correlation + "id", "description": "The request's id"},
                "reply": {"location": correlation + "re", "description": "Its request's id"},
            },
        },
    }


def asyncapi_document() -> Json:
    """The document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())


routes = web.RouteTableDef()


@routes.get("/asyncapi.json")
async def get_asyncapi(request: web.Request) -> web.Response:
    """Anyone: the AsyncAPI document of the WebSocket."""
    return web.json_response(_document())

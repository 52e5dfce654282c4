"""Issue 16: the AsyncAPI 3.0 document of the WebSocket (gateway/http/asyncapi.py)
is a well-formed AsyncAPI 3 document as far as can be checked offline: its
top-level structure, every `$ref` resolving, every operation's messages
belonging to its channel, every payload a JSON Schema (draft-07); and it
describes the contract: every request type of gateway/requests.py with the
schema of the very model that validates it and its two replies, every event
the session actor journals, the four ephemeral events without `seq`, the
error codes of core/errors.py. Frames of a real server are checked against
it in tests/functional/test_asyncapi_frames.py. Also `/docs`: the Swagger UI
page and its files, served by the server from the installed package.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft7Validator

from actors.session.fold import _FOLD as SESSION_EVENTS
from core.errors import ErrorCode
from gateway.http import asyncapi, docs
from gateway.http.errors import errors_middleware
from gateway.requests import REQUESTS

DOC = asyncapi.asyncapi_document()
MESSAGES = DOC["components"]["messages"]
OPS = DOC["operations"]
EPHEMERAL = {"signal", "notary.presence", "video.config", "notification"}


def _resolve(pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = DOC
    for part in pointer[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, pointer
        node = node[key]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _schema(message: str) -> Any:
    return MESSAGES[message]["payload"]["schema"]


def test_the_top_level_structure() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["info"]["title"] and DOC["info"]["version"] == "1"
    assert DOC["defaultContentType"] == "application/json"
    for server in DOC["servers"].values():
        assert server["protocol"] == "ws" and server["host"]
        for variable in re.findall(r"{(\w+)}", server["host"]):
            assert "default" in server["variables"][variable]
    channel = DOC["channels"]["ws"]
    assert channel["address"] == "/v1/ws"
    binding = channel["bindings"]["ws"]
    assert binding["method"] == "GET" and binding["headers"]["type"] == "object"
    subprotocols = ["enf.v1.json", "enf.v1.msgpack"]
    assert sorted(channel["x-subprotocols"]) == subprotocols
    assert binding["headers"]["properties"]["Sec-WebSocket-Protocol"]["enum"] == subprotocols
    assert {"1001", "1009", "1013", "4400", "4401", "4408", "4429"} == set(channel["x-close-codes"])
    assert set(DOC["components"]) >= {"schemas", "messages", "securitySchemes", "correlationIds"}


def test_every_ref_resolves() -> None:
    refs = _refs(DOC)
    assert len(refs) > 200
    for ref in refs:
        _resolve(ref)


def test_every_operation_names_messages_of_its_channel() -> None:
    channel_messages = DOC["channels"]["ws"]["messages"]
    used: set[str] = set()
    for name, op in OPS.items():
        assert op["action"] in ("send", "receive"), name
        assert op["channel"] == {"$ref": "#/channels/ws"}, name
        replies = op.get("reply", {}).get("messages", [])
        if "reply" in op:
            assert op["action"] == "receive" and op["reply"]["channel"] == op["channel"], name
        for m in [*op["messages"], *replies]:
            assert m["$ref"].startswith("#/channels/ws/messages/"), (name, m)
            used.add(m["$ref"].rsplit("/", 1)[1])
        assert op["messages"], name
    assert used == set(channel_messages) == set(MESSAGES)
    for name, m in channel_messages.items():
        assert m == {"$ref": f"#/components/messages/{name}"}


def test_every_payload_is_a_draft7_json_schema() -> None:
    for name, message in MESSAGES.items():
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/schema+json;version=draft-07", name
        Draft7Validator.check_schema(payload["schema"])
        assert message["name"] and message["summary"], name
    for schema in DOC["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)
    assert "$defs" not in str(DOC)


def test_every_request_type_is_received_with_its_model_and_replies() -> None:
    assert len(REQUESTS) == 20
    for kind, spec in REQUESTS.items():
        op = OPS[kind]
        assert op["action"] == "receive"
        assert op["messages"] == [{"$ref": f"#/channels/ws/messages/request.{kind}"}]
        replies = [m["$ref"].rsplit("/", 1)[1] for m in op["reply"]["messages"]]
        assert replies == [f"reply.{kind}", "reply.error"]
        assert op["x-roles"] == list(spec.roles)
        request = _schema(f"request.{kind}")
        assert request["properties"]["type"] == {"const": kind}
        data = request["properties"]["data"]
        data_ref = data["$ref"] if "$ref" in data else data["anyOf"][0]["$ref"]
        assert data_ref == f"#/components/schemas/{spec.model.__name__}"
        model = spec.model.model_json_schema()
        component = _resolve(data_ref)
        assert set(component["properties"]) == set(model["properties"]), kind
        assert component.get("required", []) == model.get("required", []), kind
        assert ("data" in request["required"]) == bool(model.get("required")), kind
        reply = _schema(f"reply.{kind}")
        assert reply["properties"]["ok"] == {"const": True}
        assert reply["required"] == ["re", "ok", "data"]


def test_ids_and_identifiers() -> None:
    """The validators' rules that JSON Schema can say: identifiers have
    their pattern; request ids are strings or integers, `re` also null."""
    session_id = DOC["components"]["schemas"]["SessionRef"]["properties"]["session_id"]
    assert session_id["pattern"] == "^[A-Za-z0-9._@-]{1,128}$"
    validator = Draft7Validator(session_id)
    assert validator.is_valid("c1") and not validator.is_valid("..")
    assert not validator.is_valid("a b") and not validator.is_valid("x" * 129)
    request_id = Draft7Validator(DOC["components"]["schemas"]["RequestId"])
    assert request_id.is_valid("c1") and request_id.is_valid(7)
    assert not request_id.is_valid("") and not request_id.is_valid(True)
    error = _schema("reply.error")
    assert error["properties"]["re"]["anyOf"][1] == {"type": "null"}
    codes = DOC["components"]["schemas"]["WsError"]["properties"]["code"]["enum"]
    assert codes == list(get_args(ErrorCode))


def test_every_event() -> None:
    events = {m.removeprefix("event."): _schema(m) for m in MESSAGES if m.startswith("event.")}
    for name, schema in events.items():
        assert schema["properties"]["name"] == {"const": name}
        assert schema["properties"]["type"] == {"const": "event"}
        assert OPS[f"event.{name}"]["action"] == "send"
        durable = "seq" in schema["required"]
        assert durable == (name not in EPHEMERAL), name
        assert durable == ("not" not in schema), name
    # Every event the session actor journals, on its topic; the notary's on its own.
    for name in SESSION_EVENTS:
        assert events[name]["properties"]["topic"]["pattern"] == "^session:", name
    for name in ("offer", "offer.expired", "offer.withdrawn"):
        assert events[name]["properties"]["topic"]["pattern"] == "^notary:"
    assert events["notary.presence"]["properties"]["topic"]["pattern"] == "^presence$"


async def test_the_document_is_served_by_its_route() -> None:
    app = web.Application()
    app.router.add_routes(asyncapi.routes)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/asyncapi.json")
        assert resp.status == 200
        assert await resp.json() == DOC


async def test_the_docs_page_and_its_files_are_served_from_the_package() -> None:
    app = web.Application(middlewares=[errors_middleware])
    app.router.add_routes(docs.routes)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/docs")
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        links = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert {"/openapi.json", "/asyncapi.json"} <= set(links)
        assert all(link.startswith("/") for link in links), links  # nothing from elsewhere
        assert 'url: "/openapi.json"' in page
        files = [link for link in links if link.startswith(docs.STATIC_PREFIX)]
        assert len(files) == 3
        for link in files:
            got = await client.get(link)
            assert got.status == 200 and len(await got.read()) > 1000, link
        for name in ("nope.js", "index.html", "swagger-initializer.js"):
            got = await client.get(docs.STATIC_PREFIX + name)
            assert got.status == 404, name
            assert (await got.json())["error"]["code"] == "not_found"

"""Issue 13, fuzzing the HTTP API with schemathesis from its OpenAPI
document (gateway/http/openapi.py) against a real server: for every
documented operation, requests generated from the document (valid ones,
and ones that break it), with the tokens of every role, none or a forged
one. No response is a server error, each conforms to the document (status,
content type, body, headers), and what breaks the document is refused.
Then what schemathesis does not write: JSON bodies with hostile values (lone
surrogates, NUL, NaN, numbers past any range) and paths and queries written
raw (percent-escapes of NUL, of bytes that are not UTF-8, of slashes, dot
segments, very long values): a documented status, never a server error.
Defects found are kept as xfail tests at the end.

One server for the whole run (its rate limits raised: a 429 is documented,
but would hide the rest); schemathesis' calls are synchronous, so the
hypothesis runs happen in a worker thread while the loop serves. Fixed
budget and seed (`ENF_FUZZ_SEED`, `ENF_FUZZ_HTTP_EXAMPLES`); a failure
prints the request as a curl command and a reproduction blob.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.http.openapi import openapi_document
from tests.conftest import Harness, MakeServer
from tests.flows import ADMIN, assigned_session, get_json

SEED = int(os.environ.get("ENF_FUZZ_SEED", "1302"))
PER_OPERATION = int(os.environ.get("ENF_FUZZ_HTTP_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=PER_OPERATION,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
NO_LIMITS = {"rate_limit": 1e6, "http_user_rate_limit": 1e6, "anon_rate_limit": 1e9}

Fuzz = Callable[[], None]

# Operations known to accept some data the document (the contract) refuses;
# each would have its own xfail test below, and is still fuzzed for everything else.
KNOWN_ACCEPTS_NEGATIVE: set[str] = set()


def _tokens(server: Harness) -> dict[str, str | None]:
    """Who calls: each role (admins weighted up: they reach furthest), nobody, a forgery."""
    forged = server.token(ADMIN, "admin")[:-4] + "AAAA"
    return {
        "admin": server.token(ADMIN, "admin"),
        "admin again": server.token(ADMIN, "admin"),
        "customer": server.token("c1", "customer"),
        "notary": server.token("n1", "enp"),
        "nobody": None,
        "forged": forged,
    }


@dataclass
class Target:
    """The server as the fuzzer aims at it."""

    base_url: str
    tokens: dict[str, str | None]
    known: dict[str, str]  # ids that exist (the session, its customer and notary)
    key_id: str  # the server's signing key
    http: requests.Session


def _property(operation: Any, mode: GenerationMode, target: Target) -> Fuzz:
    """The property for one operation and mode: whatever is sent, the answer
    is no server error and conforms to the document; data that breaks the
    document is refused (4xx)."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    if "{id}" in operation.path and mode is GenerationMode.POSITIVE:
        ids = target.known.values()
        strategies += [operation.as_strategy(path_parameters={"id": v}) for v in ids]
    checks = list(CHECKS)
    if mode is GenerationMode.NEGATIVE and operation.label not in KNOWN_ACCEPTS_NEGATIVE:
        checks.append(negative_data_rejection)
    tokens = target.tokens

    @seed(SEED)
    @FUZZ
    @given(case=st.one_of(strategies), who=st.sampled_from(sorted(tokens)), aim=st.booleans())
    def fuzz(case: Any, who: str, aim: bool) -> None:
        if aim and isinstance(case.body, dict) and "key_id" in case.body:
            # Past "unknown key", to the signature.
            case.body = {**case.body, "key_id": target.key_id}
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        token = tokens[who]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        case.headers = headers
        response = case.call(base_url=target.base_url, session=target.http, timeout=30)
        case.validate_response(response, checks=checks)

    return fuzz


def _fuzz_all(target: Target, served: set[str]) -> list[str]:
    """Every operation the server serves (`served`: its path templates), in
    both modes (in a worker thread); their labels."""
    doc = openapi_document()
    done: list[str] = []
    for result in schemathesis.openapi.from_dict(doc).get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path not in served:
            continue  # /openapi.json, until gateway/http/__init__.py lists its route
        described = doc["paths"][operation.path][operation.method.lower()]
        modes = [GenerationMode.POSITIVE]
        if "parameters" in described or "requestBody" in described:
            modes.append(GenerationMode.NEGATIVE)  # else there is nothing to break
        for mode in modes:
            try:
                _property(operation, mode, target)()
            except Unsatisfiable:
                # Nothing of it can break the document (a path of any string).
                assert mode is GenerationMode.NEGATIVE, operation.label
        done.append(operation.label)
    return done


# JSON bodies with hostile leaves: what schemathesis does not generate (lone
# surrogates, NUL, numbers past any range, NaN and Infinity as JSON texts).
HOSTILE = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=20),
    st.sampled_from(["\x00", "a\ud800", "\udfff", "x" * 600, "../../etc/passwd", "\u202e"]),
    st.integers(-(2**200), 2**200),
    st.floats(),  # NaN and infinities included
    st.none() | st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
BODIES: dict[str, Any] = {
    "PUT /v1/notaries/n-fz": {
        "name": "Atty. Fz",
        "license_number": "LIC-1",
        "commission_expires": "2031-01-01",
        "rating": 4.5,
        "tariff": 500.0,
        "specializations": ["affidavit"],
        "location": {"lat": 14.6, "lng": 121.0},
        "avg_response_time_s": 30.0,
        "notify_sms": "+639171234567",
    },
    "PUT /v1/customers/c1/favorites": {"notary_ids": ["n1", "n2"]},
    # An unknown key_id (the case below aims the server's own key at the signature).
    "POST /v1/envelopes/verify": {"envelope": {"a": ["b"]}, "signature": "AAAA", "key_id": "k"},
}


def _leaves(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths to every value inside `value` (itself included)."""
    inner: list[tuple[Any, ...]] = []
    if isinstance(value, dict | list):
        keys = value if isinstance(value, dict) else range(len(value))
        inner = [p for k in keys for p in _leaves(value[k], (*at, k))]
    return [at, *inner]


def _replaced(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    out = copy.copy(value)
    out[at[0]] = _replaced(value[at[0]], at[1:], new)
    return out


def _hostile_body(target: Target, route: str, body: Any) -> Fuzz:
    """`route`'s valid body with one to three values made hostile: 200 or a
    JSON refusal (400, 413), never a server error."""
    method, path = route.split(" ")
    headers = {"Authorization": f"Bearer {target.tokens['admin']}"}
    headers["Content-Type"] = "application/json"

    @seed(SEED)
    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        sent = body
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.sampled_from(_leaves(sent)), label="where")
            sent = _replaced(sent, at, data.draw(HOSTILE, label="what"))
        text = json.dumps(sent)  # escapes: a lone surrogate goes as \\udXXX
        r = target.http.request(method, target.base_url + path, data=text, headers=headers)
        assert r.status_code in (200, 400, 413), (route, text, r.status_code, r.text)
        if r.status_code != 200:
            assert r.json()["error"]["code"] in ("bad_request", "too_large"), r.text

    return fuzz


# Path and query values as a client may write them, percent-escapes kept:
# NUL, bytes that are not UTF-8 (a lone surrogate once decoded), an escaped
# slash, dot segments, spaces, and very long ones.
RAW = st.sampled_from(
    ["%00", "a%00b", "%FF", "%ED%A0%80", "%C0%AF", "a%2Fb", "..", "%2E%2E", "a%20b", "x" * 4000]
) | st.text("%0123456789ABCDEFabcdef.-_~@:!$&'()*+,;=", min_size=1, max_size=30)


def _hostile_url(target: Target, path: str, method: str, op: dict[str, Any]) -> Fuzz:
    """Its path and query parameters written raw: a documented status, never
    a server error (the probes and static files included)."""
    params = op.get("parameters", [])
    query = [p["name"] for p in params if p["in"] == "query"]
    headers = {"Authorization": f"Bearer {target.tokens['admin']}"}

    @seed(SEED)
    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        url = path
        for p in params:
            if p["in"] == "path":
                value = data.draw(
                    RAW | st.sampled_from(list(target.known.values())), label=p["name"]
                )
                url = url.replace("{" + p["name"] + "}", value)
        chosen = data.draw(st.lists(st.sampled_from(query), unique=True) if query else st.just([]))
        url += "?" + "&".join(f"{name}={data.draw(RAW, label=name)}" for name in chosen)
        prepared = requests.Request(
            method.upper(), target.base_url + url, headers=headers
        ).prepare()
        prepared.url = target.base_url + url  # as written: requests would re-quote it
        r = target.http.send(prepared, timeout=30)
        assert str(r.status_code) in op["responses"], (method, url, r.status_code, r.text)

    return fuzz


def _hostile(target: Target, served: set[str]) -> None:
    """Hostile bodies, then hostile paths and queries (in a worker thread)."""
    for route, body in BODIES.items():
        _hostile_body(target, route, body)()
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            if path in served and method in ("get", "post") and op.get("parameters"):
                _hostile_url(target, path, method, op)()


async def _key_id(server: Harness) -> str:
    status, body = await get_json(server, "/v1/keys")
    assert status == 200, body
    key_id: str = body["keys"][0]["key_id"]
    return key_id


async def _post_verify(server: Harness, body: str) -> tuple[int, Any]:
    """POST /v1/envelopes/verify with this JSON text: status and JSON answer."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.url("/v1/envelopes/verify"),
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        return r.status, await r.json(content_type=None)


def _template(resource: web.AbstractResource) -> str:
    info = resource.get_info()
    if isinstance(resource, web.StaticResource):
        return str(info["prefix"]).rstrip("/") + "/{filename}"
    return str(info.get("formatter") or info["path"])


async def test_http_api_fuzzed_from_its_openapi_document(make_server: MakeServer) -> None:
    server = await make_server(**NO_LIMITS)
    _customer, _notary, sid = await assigned_session(server)
    known = {"session": sid, "customer": "c1", "notary": "n1"}
    served = {_template(r) for r in server.server.app.router.resources()}
    http = requests.Session()
    try:
        target = Target(server.base_url, _tokens(server), known, await _key_id(server), http)
        done = await asyncio.to_thread(_fuzz_all, target, served)
        await asyncio.to_thread(_hostile, target, served)
    finally:
        await asyncio.to_thread(http.close)  # its sockets: off the loop
    assert len(done) >= sum(len(item) for item in openapi_document()["paths"].values()) - 1
    # Still serving, the session untouched by what was thrown at it.
    c = await server.client("c1", "customer")
    joined = await c.call("session.join", {"session_id": sid})
    assert joined["session"]["state"] == "ENP_ASSIGNED"


# -- what the fuzzers found ------------------------------------------------------------


async def test_verify_with_a_lone_surrogate_in_the_envelope(server: Harness) -> None:
    key_id = await _key_id(server)
    for envelope in ('{"x": "\\ud800"}', '{"\\udc00": 1}'):
        body = f'{{"envelope": {envelope}, "signature": "", "key_id": "{key_id}"}}'
        status, answer = await _post_verify(server, body)
        assert status in (200, 400), (body, status, answer)  # a verdict, or a refusal


async def test_verify_refuses_a_mistyped_envelope(server: Harness) -> None:
    status, answer = await _post_verify(server, '{"envelope": null, "signature": 15, "key_id": 5}')
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_request"


async def test_console_file_name_too_long(server: Harness) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url("/console/" + "x" * 300)) as r:
        assert 400 <= r.status < 500, (r.status, await r.text())

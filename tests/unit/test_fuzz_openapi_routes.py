"""Issue 13: the OpenAPI document (gateway/http/openapi.py) and the app's
route table agree: every route the app serves is documented (method and
path template), and every documented operation is a route of the app. The
document is also a valid OpenAPI 3.1 document, as schemathesis loads it.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from schemathesis.core.result import Err, Ok

from gateway.app import create_app
from gateway.http import openapi
from tests.conftest import JWT_SECRET, make_settings

Operation = tuple[str, str]  # (METHOD, /path/{template})


def _templates(resource: web.AbstractResource) -> str:
    """A resource's path as an OpenAPI template: static files under a prefix
    are `{prefix}/{filename}`."""
    info = resource.get_info()
    if isinstance(resource, web.StaticResource):
        return str(info["prefix"]).rstrip("/") + "/{filename}"
    return str(info.get("formatter") or info["path"])


def _served(app: web.Application) -> set[Operation]:
    """What the app routes; HEAD is aiohttp's own companion of each GET (not
    documented separately)."""
    ops = {(route.method, _templates(r)) for r in app.router.resources() for route in r}
    gets = {path for method, path in ops if method == "GET"}
    return {(m, p) for m, p in ops if not (m == "HEAD" and p in gets)}


def _documented(doc: openapi.Json) -> set[Operation]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def _app(tmp_path: Path) -> web.Application:
    """The app as run.py makes it (nothing started: the route table only);
    /openapi.json added if gateway/http/__init__.py does not list it yet."""
    app = create_app(make_settings(tmp_path), "postgresql://unused/unused", JWT_SECRET)
    if not any(_templates(r) == "/openapi.json" for r in app.router.resources()):
        app.router.add_routes(openapi.routes)
    return app


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    served, documented = _served(_app(tmp_path)), _documented(openapi.openapi_document())
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"
    assert ("PUT", "/v1/notaries/{id}") in served and len(served) >= 20


def test_path_parameters_match_the_templates() -> None:
    """Each operation declares exactly the parameters its path template names."""
    doc = openapi.openapi_document()
    for path, item in doc["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


def test_errors_are_documented_with_the_json_error_body() -> None:
    """Every operation that may refuse names the JSON error body with its
    status; authenticated ones carry 400/401/403/404/429/503, those with a body 413."""
    doc = openapi.openapi_document()
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message"}
    assert "internal" not in error["properties"]["error"]["properties"]["code"]["enum"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert "500" not in statuses, (method, path)
            if op["security"] and path != "/v1/ws":  # the upgrade: 400, 401, 429, 503
                assert {"400", "401", "403", "404", "429", "503"} <= statuses, (method, path)
            if "requestBody" in op:
                assert "413" in statuses, (method, path)
            if path.startswith("/console/"):
                continue  # aiohttp's static files: a 403 or 404 without the JSON body
            for status in statuses - {"101", "200", "204", "503"}:
                assert op["responses"][status]["$ref"] == f"#/components/responses/E{status}"


def test_bodies_validated_by_models_use_their_json_schema() -> None:
    doc = openapi.openapi_document()
    schemas = doc["components"]["schemas"]
    profile = doc["paths"]["/v1/notaries/{id}"]["put"]["requestBody"]["content"]
    assert profile["application/json"]["schema"] == {"$ref": "#/components/schemas/NotaryProfile"}
    assert schemas["NotaryProfile"]["properties"]["rating"]["anyOf"][0]["maximum"] == 5
    assert "LatLng" in schemas  # a nested model, lifted out of $defs
    assert "$defs" not in str(doc)
    assert schemas["Favorites"]["required"] == ["notary_ids"]


def test_schemathesis_loads_the_document() -> None:
    schema = schemathesis.openapi.from_dict(openapi.openapi_document())
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), [r for r in results if isinstance(r, Err)]
    labels = {r.ok().label for r in results if isinstance(r, Ok)}
    assert "POST /v1/envelopes/verify" in labels
    assert len(labels) == len(_documented(openapi.openapi_document()))


async def test_the_document_is_served_by_its_route() -> None:
    """`openapi.routes` answers GET /openapi.json with the document."""
    app = web.Application()
    app.router.add_routes(openapi.routes)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        assert await resp.json() == openapi.openapi_document()

"""`GET /docs`: the HTTP API's OpenAPI document (`/openapi.json`) in Swagger
UI, with a link to the WebSocket's AsyncAPI document (`/asyncapi.json`).

Swagger UI comes from the `swagger-ui-py` package (Swagger UI 5, which
renders OpenAPI 3.1; `swagger-ui-bundle` ships Swagger UI 4, which refuses
3.1 documents). Its files are served from the package's directory under
`/docs/static/`, so the page loads nothing from another origin. Only the
files the page needs (and their source maps) are served, by name; any other
name is a JSON 404 like every refusal of the API. The page sets no
Content-Security-Policy of its own: its one script is inline, and Swagger
UI uses inline styles and `data:` images.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from core.errors import ProtocolError

STATIC_PREFIX = "/docs/static/"

# What the page loads, and the favicons browsers ask for.
ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)


def swagger_ui_dir() -> Path:
    """The directory of Swagger UI's files in the `swagger-ui-py` package
    (found without importing the package: its handlers are not used)."""
    spec = importlib.util.find_spec("swagger_ui")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise RuntimeError("swagger-ui-py is not installed (a dependency: pip install -e .)")
    return Path(locations[0]) / "static"


def _served_files(directory: Path) -> dict[str, Path]:
    """The assets and their source maps, by name; every asset must be there."""
    files = {name: directory / name for name in ASSETS}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui-py's files are incomplete: {missing} not in {directory}")
    maps = {f"{n}.map": directory / f"{n}.map" for n in ASSETS}
    return files | {name: path for name, path in maps.items() if path.is_file()}


FILES = _served_files(swagger_ui_dir())

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ENF session server: API documentation</title>
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<style>
  body { margin: 0; font-family: sans-serif; }
  #contract { padding: 10px 20px; background: #f4f4f4; border-bottom: 1px solid #ddd; }
</style>
</head>
<body>
<p id="contract">
  The HTTP API: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1), below.
  The WebSocket <code>/v1/ws</code> (requests, replies, events):
  <a href="/asyncapi.json">/asyncapi.json</a> (AsyncAPI 3.0).
</p>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
</script>
</body>
</html>
"""

routes = web.RouteTableDef()


@routes.get("/docs")
async def get_docs(request: web.Request) -> web.Response:
    """Anyone: the API documentation page."""
    return web.Response(text=PAGE, content_type="text/html")


@routes.get(STATIC_PREFIX + "{filename}")
async def get_docs_file(request: web.Request) -> web.FileResponse:
    """Swagger UI's files, by name."""
    path = FILES.get(request.match_info["filename"])
    if path is None:
        raise ProtocolError("not_found", "no such file")
    return web.FileResponse(path)

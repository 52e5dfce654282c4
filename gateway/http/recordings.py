"""Recordings over HTTP: a short-lived link to a session's recording, and
the `file://` recordings such links point to."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from aiohttp import web

from core.clock import iso
from core.errors import ProtocolError
from core.ids import check_identifier
from core.links import LINK_TTL_S, check_path, sign_path
from gateway.http.access import identify, services_of, visible_session
from gateway.http.inputs import session_id
from media.storage import FileStorage

routes = web.RouteTableDef()


@routes.get("/v1/sessions/{id}/recording")
async def get_recording_link(request: web.Request) -> web.Response:
    """A short-lived link to the session's recording (participants, admins)."""
    ident = identify(request)
    sid = session_id(request)
    services = services_of(request)
    row = await visible_session(request, ident, sid)
    recording = (row["snapshot"] or {}).get("recording")
    if not recording:
        raise ProtocolError("not_found", "this session has no finished recording")
    url = recording["url"]
    link = services.storage.link(url, LINK_TTL_S)
    if link is not None:
        expires = int(time.time()) + LINK_TTL_S
    else:
        name = unquote(url.rsplit("/", 1)[-1])  # the file's name, as the route decodes it
        path, expires = sign_path(services.jwt_secret, f"/v1/recordings/{sid}/{quote(name)}")
        link = str(request.url.origin()) + path
    return web.json_response({"url": link, "expires_at": iso(datetime.fromtimestamp(expires, UTC))})


@routes.get("/v1/recordings/{id}/{name}")
async def get_recording_file(request: web.Request) -> web.StreamResponse:
    """A `file://` recording, for whoever holds an unexpired signed link."""
    sid = session_id(request)
    # A file name of the recorder's (PROTOCOL §8's characters): never a path.
    name = check_identifier(request.match_info["name"], "recording name")
    path = f"/v1/recordings/{sid}/{quote(name)}"
    why = check_path(
        services_of(request).jwt_secret,
        path,
        request.query.get("expires", ""),
        request.query.get("sig", ""),
    )
    if why is not None:
        raise ProtocolError("forbidden", f"recording link refused: {why}")
    storage = services_of(request).storage
    if not isinstance(storage, FileStorage) or name.startswith("."):
        raise ProtocolError("not_found", "no such recording")
    # Resolving and checking the path touches the disk: off the event loop.
    file = await asyncio.to_thread(storage.path_of, (storage.root / sid / name).absolute().as_uri())
    if file is None:
        raise ProtocolError("not_found", "no such recording")
    return web.FileResponse(file, headers={"Content-Type": "video/x-matroska"})

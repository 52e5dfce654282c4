"""What a request carries, checked: its JSON body against a model, the ids
in its path, and an export's format."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from core.errors import ProtocolError
from gateway.requests import Model


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json(loads=lambda s: json.loads(s, parse_constant=_bad_constant))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad_request", "the body must be JSON") from None


def _bad_constant(name: str) -> Any:
    raise ValueError(name)


def validate(model: type[Model], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ProtocolError("bad_request", f"{where}: {first['msg']}") from None


def session_id(request: web.Request) -> str:
    """The `{id}` of the path, a session id (a UUID); not_found otherwise."""
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise ProtocolError("not_found", "no such session") from None


def user_id(request: web.Request) -> str:
    """The `{id}` of the path, a user id (a notary or a customer)."""
    uid = request.match_info["id"]
    if not 0 < len(uid) <= 128 or ":" in uid:
        raise ProtocolError("bad_request", "invalid id")
    return uid


def export_format(request: web.Request) -> str:
    """`?format=`: json (the default) or csv."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ProtocolError("bad_request", "format must be json or csv")
    return fmt

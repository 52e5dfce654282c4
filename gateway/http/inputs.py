"""What a request carries, checked: its JSON body against a model, the ids
in its path, and an export's format."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from core.errors import ProtocolError
from core.ids import check_identifier
from gateway.requests import Model

# A JSON body nests at most this deep: deeper is refused before anything
# walks it (recursive code would hit Python's recursion limit).
MAX_DEPTH = 64


async def json_body(request: web.Request) -> Any:
    try:
        body = await request.json(loads=lambda s: json.loads(s, parse_constant=_bad_constant))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad_request", "the body must be JSON") from None
    except RecursionError:
        raise ProtocolError("bad_request", "the body nests too deeply") from None
    if _too_deep(body):
        raise ProtocolError("bad_request", f"the body nests deeper than {MAX_DEPTH} levels")
    return body


def _too_deep(value: Any) -> bool:
    """Whether `value` nests deeper than MAX_DEPTH (walked without recursion)."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for v in level
            if isinstance(v, dict | list)
            for child in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return any(isinstance(v, dict | list) for v in level)


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


def path_id(request: web.Request, what: str = "id") -> str:
    """The `{id}` of the path, an identifier (PROTOCOL §8); bad_request otherwise."""
    return check_identifier(request.match_info["id"], what)


def session_id(request: web.Request) -> str:
    """The `{id}` of the path, a session id: an identifier (else bad_request)
    that is a UUID (else not_found)."""
    try:
        return str(uuid.UUID(path_id(request, "session id")))
    except ValueError:
        raise ProtocolError("not_found", "no such session") from None


def user_id(request: web.Request) -> str:
    """The `{id}` of the path, a user id (a notary or a customer)."""
    return path_id(request, "user id")


def query_id(request: web.Request, name: str) -> str | None:
    """The query parameter `name`, an identifier if given (else bad_request)."""
    value = request.query.get(name)
    return None if value is None else check_identifier(value, name)


def export_format(request: web.Request) -> str:
    """`?format=`: json (the default) or csv."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ProtocolError("bad_request", "format must be json or csv")
    return fmt

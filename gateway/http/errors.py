"""HTTP errors: the JSON error body every refusal carries, and the middleware
that turns a ProtocolError (or an aiohttp HTTP error, or a crash) into it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from core.errors import HTTP_STATUS, ErrorCode, ProtocolError
from persistence.events import Unavailable
from persistence.journal_writer import CONNECTION_ERRORS

logger = logging.getLogger(__name__)


def error_response(code: ErrorCode, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=HTTP_STATUS[code]
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ProtocolError as exc:
        logger.info("%s %s refused: %s %s", request.method, request.path, exc.code, exc.message)
        return error_response(exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            codes: dict[int, ErrorCode] = {404: "not_found", 413: "too_large"}
            code: ErrorCode = codes.get(exc.status, "bad_request")
            return web.json_response(
                {"error": {"code": code, "message": exc.reason}}, status=exc.status
            )
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except (Unavailable, *CONNECTION_ERRORS) as exc:
        # The database (or another dependency) is away: the caller may retry.
        logger.warning("%s %s unavailable: %r", request.method, request.path, exc)
        return error_response("unavailable", "a dependency is unavailable, try again")
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return error_response("internal", "internal error")

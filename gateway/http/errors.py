"""HTTP errors: the JSON error body every refusal carries, and the middleware
that turns a ProtocolError (or an aiohttp HTTP error, or a crash) into it."""

from __future__ import annotations

import errno
import logging
from typing import Any

from aiohttp import web

from core.errors import HTTP_STATUS, ErrorCode, ProtocolError
from persistence.events import CONNECTION_ERRORS, Unavailable

logger = logging.getLogger(__name__)

# What a file lookup from a request's path can end with that is the path's
# fault, not a dependency's (an OSError otherwise reads as an outage).
LOCAL_FILE_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EINVAL}
)


def error_response(code: ErrorCode, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=HTTP_STATUS[code]
    )


def too_many(message: str, retry_after: int | None = None) -> web.Response:
    """429 `rate_limited` (a limit of PROTOCOL §8), with Retry-After if given."""
    response = error_response("rate_limited", message)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except Exception as exc:
        return error_for(request, exc)


def error_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error a call that raised `exc` answers (re-raised: an aiohttp
    HTTP exception that is no error, which aiohttp answers itself)."""
    if isinstance(exc, ProtocolError):
        logger.info("%s %s refused: %s %s", request.method, request.path, exc.code, exc.message)
        return error_response(exc.code, exc.message)
    if isinstance(exc, web.HTTPException):
        if exc.status >= 400 and exc.content_type != "application/json":
            codes: dict[int, ErrorCode] = {404: "not_found", 413: "too_large"}
            code: ErrorCode = codes.get(exc.status, "bad_request")
            return web.json_response(
                {"error": {"code": code, "message": exc.reason}}, status=exc.status
            )
        raise exc
    if isinstance(exc, (Unavailable, *CONNECTION_ERRORS)):
        if isinstance(exc, OSError) and exc.errno in LOCAL_FILE_ERRNOS:
            # A file name the caller made up (too long, not a file): no outage.
            logger.info("%s %s refused: %s", request.method, request.path, exc.strerror)
            return error_response("not_found", "no such file")
        # The database (or another dependency) is away: the caller may retry.
        logger.warning("%s %s unavailable: %r", request.method, request.path, exc)
        return error_response("unavailable", "a dependency is unavailable, try again")
    logger.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error_response("internal", "internal error")

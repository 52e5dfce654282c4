"""The vocabulary of the wire contract: error codes, close codes, envelopes.

Everything a client can observe is named here once (PROTOCOL.md §3, §8).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "rate_limited",
    "too_large",
    "unavailable",
    "internal",
]

HTTP_STATUS: Final[dict[str, int]] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}

SUBPROTOCOL_JSON: Final = "enf.v1.json"
SUBPROTOCOL_MSGPACK: Final = "enf.v1.msgpack"

MAX_FRAME: Final = 65_536

CLOSE_GOING_AWAY: Final = 1001
CLOSE_TOO_BIG: Final = 1009
CLOSE_TOO_SLOW: Final = 1013
CLOSE_PROTOCOL: Final = 4400
CLOSE_BAD_TOKEN: Final = 4401
CLOSE_NO_HELLO: Final = 4408
CLOSE_FLOOD: Final = 4429

HELLO_TIMEOUT_S: Final = 5.0


class ProtocolError(Exception):
    """A refusal that goes back to the client as `{"ok": false, "error": …}`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def now_iso() -> str:
    """UTC time with millisecond precision, the one format used on the wire."""
    return iso(datetime.now(UTC))


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def reply_ok(request_id: Any, data: dict[str, Any]) -> dict[str, Any]:
    return {"re": request_id, "ok": True, "data": data}


def reply_error(request_id: Any, code: ErrorCode, message: str) -> dict[str, Any]:
    return {"re": request_id, "ok": False, "error": {"code": code, "message": message}}

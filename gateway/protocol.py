"""The transport's part of the wire contract: subprotocols, frame limit,
close codes and reply envelopes (PROTOCOL.md §3, §8). Error codes and
times are the whole server's vocabulary: `core.errors`, `core.clock`."""

from __future__ import annotations

from typing import Any, Final

from core.errors import ErrorCode

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


def reply_ok(request_id: Any, data: dict[str, Any]) -> dict[str, Any]:
    return {"re": request_id, "ok": True, "data": data}


def reply_error(request_id: Any, code: ErrorCode, message: str) -> dict[str, Any]:
    return {"re": request_id, "ok": False, "error": {"code": code, "message": message}}

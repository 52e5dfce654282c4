"""The two codecs of PROTOCOL §3: `enf.v1.json` (text) and `enf.v1.msgpack` (binary)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import orjson

from gateway.protocol import SUBPROTOCOL_MSGPACK


class DecodeError(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise DecodeError(f"{name} is not valid JSON")


# One decoder for every frame: `json.loads` with a keyword builds a new one per call.
_JSON = json.JSONDecoder(parse_constant=_no_constants)


class JsonCodec:
    name = "enf.v1.json"
    binary = False

    def encode(self, msg: dict[str, Any]) -> str:
        """orjson (several times faster than `json` on replies and events);
        what it refuses goes through `json`: an unpaired surrogate (a
        client's own JSON escape echoed back, made sendable by `utf8_text`
        off the hot path), an integer beyond 64 bits, a key not a string."""
        try:
            return orjson.dumps(msg).decode()
        except TypeError:  # orjson.JSONEncodeError
            return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)

    def decode(self, raw: str | bytes) -> Any:
        try:
            return _JSON.decode(raw if isinstance(raw, str) else raw.decode())
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"undecodable JSON: {exc}") from None


class MsgpackCodec:
    name = "enf.v1.msgpack"
    binary = True

    def encode(self, msg: dict[str, Any]) -> bytes:
        try:
            out: bytes = msgpack.packb(msg, use_bin_type=True)
        except UnicodeEncodeError:
            # An unpaired surrogate (from a JSON client's escape): spelled out
            # as its escape, so the frame is valid UTF-8.
            out = msgpack.packb(msg, use_bin_type=True, unicode_errors="backslashreplace")
        return out

    def decode(self, raw: str | bytes) -> Any:
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=65536)
        except Exception as exc:  # msgpack raises a variety of types
            raise DecodeError(f"undecodable msgpack: {exc}") from None


Codec = JsonCodec | MsgpackCodec


def utf8_text(frame: str) -> str:
    """A JSON frame with each unpaired surrogate written as its JSON escape
    (`\\udXXX`; in JSON output one only occurs inside a string): the same
    value, now encodable as UTF-8."""
    return frame.encode("utf-8", "backslashreplace").decode("utf-8")


_JSON_CODEC, _MSGPACK_CODEC = JsonCodec(), MsgpackCodec()  # stateless: shared


def codec_for(subprotocol: str | None) -> Codec:
    return _MSGPACK_CODEC if subprotocol == SUBPROTOCOL_MSGPACK else _JSON_CODEC

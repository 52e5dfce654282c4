"""The two codecs of PROTOCOL §3, as a client needs them: `enf.v1.json`
(text frames) and `enf.v1.msgpack` (binary frames, same structure)."""

from __future__ import annotations

import json
from typing import Any

import msgpack

JSON = "enf.v1.json"
MSGPACK = "enf.v1.msgpack"


class JsonCodec:
    name = JSON
    binary = False

    def encode(self, frame: Any) -> str:
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)

    def decode(self, raw: str | bytes) -> Any:
        return json.loads(raw)


class MsgpackCodec:
    name = MSGPACK
    binary = True

    def encode(self, frame: Any) -> bytes:
        try:
            out: bytes = msgpack.packb(frame, use_bin_type=True)
        except UnicodeEncodeError:  # an unpaired surrogate: UTF-8 has none; sent as its escape
            out = msgpack.packb(frame, use_bin_type=True, unicode_errors="backslashreplace")
        return out

    def decode(self, raw: str | bytes) -> Any:
        if isinstance(raw, str):
            raise ValueError("a text frame on enf.v1.msgpack")
        return msgpack.unpackb(raw, raw=False)


Codec = JsonCodec | MsgpackCodec


def codec_named(name: str) -> Codec:
    """`"json"` or `"msgpack"` (or the subprotocol's full name)."""
    if name in ("msgpack", MSGPACK):
        return MsgpackCodec()
    if name in ("json", JSON):
        return JsonCodec()
    raise ValueError(f"unknown codec {name!r}: json or msgpack")

"""Issue 13, fuzzing the frame codecs (gateway/codec.py, PROTOCOL §3, §8):
whatever a client sends, decoding answers a value or `DecodeError` (the one
error the connection turns into `bad_request`), never anything else; valid
frames survive encode -> decode in both codecs; NUL, unpaired surrogates,
deep nesting and huge numbers are handled. (Compression is aiohttp's
permessage-deflate, below the codecs: not ours to fuzz here.)

Fixed budget, no example database; a failure prints its reproduction blob.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import DecodeError, JsonCodec, MsgpackCodec, codec_for, utf8_text
from gateway.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

FUZZ = settings(max_examples=300, deadline=None, database=None, print_blob=True)

JSON, MSGPACK = JsonCodec(), MsgpackCodec()

# Text of any code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)
# Text that UTF-8 can carry (what msgpack's str type holds).
UTF8_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


def _pairs_surrogates(text: str) -> bool:
    """Whether a high surrogate is directly followed by a low one: two code
    points that no JSON or msgpack frame decodes to (an escaped pair decodes
    to the one character they spell)."""
    return any(
        0xD800 <= ord(a) <= 0xDBFF and 0xDC00 <= ord(b) <= 0xDFFF
        for a, b in itertools.pairwise(text)
    )


LONE_TEXT = ANY_TEXT.filter(lambda t: not _pairs_surrogates(t))


def frames(text: st.SearchStrategy[str], ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """Frame-shaped values: objects of JSON values (finite numbers) nested a few deep."""
    scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False)
    values = st.recursive(
        scalars | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=20,
    )
    return st.dictionaries(text, values, max_size=6)


JSON_FRAMES = frames(LONE_TEXT, st.integers())
MSGPACK_FRAMES = frames(UTF8_TEXT, st.integers(min_value=-(2**63), max_value=2**64 - 1))


def _decodes_or_refuses(codec: JsonCodec | MsgpackCodec, raw: str | bytes) -> Any:
    """`codec.decode(raw)`; DecodeError is the only refusal allowed (any
    other exception fails the test as it is)."""
    try:
        return codec.decode(raw)
    except DecodeError as exc:
        assert str(exc), "a DecodeError says why"
        return exc


# -- anything at all: a value or DecodeError --------------------------------------------


@FUZZ
@given(raw=ANY_TEXT | st.text(max_size=400))
def test_json_decodes_any_text_or_refuses(raw: str) -> None:
    _decodes_or_refuses(JSON, raw)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_json_decodes_any_bytes_or_refuses(raw: bytes) -> None:
    """Bytes that are not UTF-8 included."""
    _decodes_or_refuses(JSON, raw)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_msgpack_decodes_any_bytes_or_refuses(raw: bytes) -> None:
    _decodes_or_refuses(MSGPACK, raw)


@FUZZ
@given(raw=ANY_TEXT)
def test_msgpack_refuses_text(raw: str) -> None:
    """A text frame reaching the msgpack codec is refused, not a TypeError."""
    assert isinstance(_decodes_or_refuses(MSGPACK, raw), DecodeError)


@FUZZ
@given(frame=JSON_FRAMES, cut=st.integers(min_value=0, max_value=10_000))
def test_json_truncated_frames(frame: dict[str, Any], cut: int) -> None:
    """A valid frame cut short anywhere: a value or DecodeError."""
    text = JSON.encode(frame)
    _decodes_or_refuses(JSON, text[: cut % (len(text) + 1)])


@FUZZ
@given(frame=MSGPACK_FRAMES, cut=st.integers(min_value=0, max_value=10_000), flip=st.integers())
def test_msgpack_truncated_and_flipped_frames(frame: dict[str, Any], cut: int, flip: int) -> None:
    """A valid frame cut short, or with one byte changed: a value or DecodeError."""
    raw = MSGPACK.encode(frame)
    _decodes_or_refuses(MSGPACK, raw[: cut % (len(raw) + 1)])
    pos = flip % len(raw)
    changed = raw[:pos] + bytes([(raw[pos] + 1 + (flip >> 8) % 255) % 256]) + raw[pos + 1 :]
    _decodes_or_refuses(MSGPACK, changed)


# -- valid frames round-trip -------------------------------------------------------------


@FUZZ
@given(frame=JSON_FRAMES)
def test_json_round_trip(frame: dict[str, Any]) -> None:
    """Exactly, as text; and as the UTF-8 the socket sends (`utf8_text`
    spells each lone surrogate as its escape: the same value decodes)."""
    text = JSON.encode(frame)
    assert JSON.decode(text) == frame
    sendable = utf8_text(text)
    assert JSON.decode(sendable.encode("utf-8")) == frame


@FUZZ
@given(frame=MSGPACK_FRAMES)
def test_msgpack_round_trip(frame: dict[str, Any]) -> None:
    raw = MSGPACK.encode(frame)
    assert isinstance(raw, bytes)
    assert MSGPACK.decode(raw) == frame


@FUZZ
@given(frame=frames(ANY_TEXT, st.integers(min_value=-(2**63), max_value=2**64 - 1)))
def test_msgpack_encodes_lone_surrogates(frame: dict[str, Any]) -> None:
    """Text no UTF-8 can hold (a JSON client's escape, relayed to a msgpack
    client) still encodes, to a frame that decodes."""
    raw = MSGPACK.encode(frame)
    decoded = MSGPACK.decode(raw)
    assert isinstance(decoded, dict) and len(decoded) <= len(frame)


@FUZZ
@given(protocol=st.none() | ANY_TEXT)
def test_codec_by_subprotocol(protocol: str | None) -> None:
    """`enf.v1.msgpack` is binary msgpack; anything else (absent, unknown) JSON text."""
    codec = codec_for(protocol)
    if protocol == SUBPROTOCOL_MSGPACK:
        assert isinstance(codec, MsgpackCodec) and codec.binary
    else:
        assert isinstance(codec, JsonCodec) and not codec.binary
        assert codec.name == SUBPROTOCOL_JSON


# -- the edges by name ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_nul_round_trips(codec: JsonCodec | MsgpackCodec) -> None:
    frame = {"id": "a\x00b", "type": "\x00", "data": {"\x00": ["\x00" * 3]}}
    assert codec.decode(codec.encode(frame)) == frame


def test_json_lone_surrogate_escapes_decode() -> None:
    """`\\ud800` in JSON is a lone surrogate: decoded, not refused (the
    request checks refuse it where it would be stored)."""
    assert JSON.decode('{"id":"\\ud800","x":"\\udfff\\ud800"}') == {
        "id": "\ud800",
        "x": "\udfff\ud800",
    }
    assert JSON.decode(b'{"pair":"\\ud83d\\ude00"}') == {"pair": "\U0001f600"}


def test_msgpack_refuses_invalid_utf8_text() -> None:
    """A msgpack str of bytes that are not UTF-8 (a raw surrogate) is refused."""
    raw = b"\x81\xa2id\xa3\xed\xa0\x80"  # {"id": <UTF-8 of U+D800>}
    with pytest.raises(DecodeError):
        MSGPACK.decode(raw)


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_json_deep_nesting_is_refused(depth: int) -> None:
    """Nesting deeper than the parser's recursion: DecodeError, not RecursionError."""
    with pytest.raises(DecodeError):
        JSON.decode("[" * depth + "]" * depth)
    with pytest.raises(DecodeError):
        JSON.decode('{"a":' * depth + "1" + "}" * depth)


def test_json_moderate_nesting_decodes() -> None:
    assert JSON.decode("[" * 200 + "]" * 200) is not None


@pytest.mark.parametrize("depth", [10_000, 1_000_000])
def test_msgpack_deep_nesting_is_refused(depth: int) -> None:
    with pytest.raises(DecodeError):
        MSGPACK.decode(b"\x91" * depth + b"\xc0")  # [[[…[nil]…]]]
    with pytest.raises(DecodeError):
        MSGPACK.decode(b"\x81\xa1a" * depth + b"\xc0")  # {"a": {"a": …nil}}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '{"x":NaN}', "[Infinity]"])
def test_json_refuses_non_finite_literals(literal: str) -> None:
    """Not JSON (RFC 8259), though Python's parser would take them."""
    with pytest.raises(DecodeError):
        JSON.decode(literal)


def test_json_huge_numbers() -> None:
    """An integer of more digits than Python converts is refused; a float
    beyond range decodes (to infinity; the request models refuse it) and
    the codec does not crash either way."""
    with pytest.raises(DecodeError):
        JSON.decode('{"n":' + "9" * 100_000 + "}")
    assert JSON.decode('{"n":' + "9" * 4000 + "}")["n"] == 10**4000 - 1
    assert math.isinf(JSON.decode('{"f":1e99999}')["f"])
    assert JSON.decode('{"f":1e-99999}')["f"] == 0.0


def test_msgpack_numbers_at_the_edges() -> None:
    for n in (2**64 - 1, -(2**63), 0):
        assert MSGPACK.decode(msgpack.packb({"n": n}))["n"] == n
    for f in (math.inf, -math.inf):
        assert MSGPACK.decode(msgpack.packb({"f": f}))["f"] == f
    assert math.isnan(MSGPACK.decode(msgpack.packb({"f": math.nan}))["f"])


def test_msgpack_refuses_oversize_bin_and_non_string_keys() -> None:
    with pytest.raises(DecodeError):
        MSGPACK.decode(msgpack.packb({"b": b"x" * 65_537}, use_bin_type=True))
    assert MSGPACK.decode(msgpack.packb({"b": b"x" * 65_536}, use_bin_type=True))["b"]
    with pytest.raises(DecodeError):
        MSGPACK.decode(msgpack.packb({1: "int key"}))


def test_json_encode_never_emits_non_json_for_finite_frames() -> None:
    """What the server sends parses as strict JSON (no NaN constants)."""
    text = JSON.encode({"a": [1.5, -0.0, 10**30, "\x00\ud800"]})
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_json_encode_falls_back_for_what_orjson_refuses() -> None:
    """orjson encodes the frames; what it refuses (an integer beyond 64 bits,
    an unpaired surrogate, a non-string key) is still encoded, by `json`."""
    for frame, back in (
        ({"n": 2**70}, {"n": 2**70}),
        ({"s": "a\ud800b"}, {"s": "a\ud800b"}),
        ({"d": {1: "x"}}, {"d": {"1": "x"}}),
        ({"t": "é ✓ \u0000"}, {"t": "é ✓ \u0000"}),
    ):
        assert JSON.decode(JSON.encode(frame)) == back

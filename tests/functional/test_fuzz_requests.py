"""Issue 13, fuzzing every request of PROTOCOL §4 over a real server: frames
of every type, their fields valid, mutated (wrong types, NUL, lone
surrogates, long strings, path characters, absurd numbers), missing or
joined by unknown ones, sent by every role over both codecs. Each gets
exactly one reply, `ok` or an error with one of the contract's codes (never
`internal`), and no connection closes; afterwards every connection still
answers, its writer alive, and a fresh client is served.

One server for the whole run, its session in the call (VIDEO_IN_PROGRESS)
so that the act's steps reach it, the steps that end it fuzzed last.
Hypothesis drives the examples from a worker thread (`@given` is
synchronous), each one sent and awaited on the test's loop. Fixed budget,
fixed seed (`ENF_FUZZ_SEED`, `ENF_FUZZ_EXAMPLES` per type for another run);
a failure prints its reproduction blob.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from enf_client import EnfClient
from enf_client.codec import JsonCodec as ClientJson
from hypothesis import assume, given, seed, settings
from hypothesis import strategies as st

from core.text import storable
from gateway.codec import DecodeError, JsonCodec, MsgpackCodec
from gateway.connection import Connection
from gateway.protocol import MAX_FRAME
from gateway.requests import REQUESTS
from tests.conftest import Harness, MakeServer
from tests.flows import ADMIN, assigned_session, doc, join_both

SEED = int(os.environ.get("ENF_FUZZ_SEED", "1302"))
PER_TYPE = int(os.environ.get("ENF_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=PER_TYPE, deadline=None, database=None, print_blob=True)
# PROTOCOL §3's error codes, `internal` aside.
CODES = {"bad_request", "forbidden", "not_found", "conflict", "rate_limited", "unavailable"}
CODES |= {"too_large", "unauthorized"}
REPLY_S = 15.0

Run = Callable[[Coroutine[Any, Any, Any]], Any]
S = st.SearchStrategy[Any]


# -- values ------------------------------------------------------------------------------

ODD_TEXT = [
    *["", "\x00", "a\x00b", "\ud800", "x\udfffy", "../../etc/passwd", "a/b", "%2e%2e%2f"],
    *[".", "..", "session:x", "notary:n1", "presence", "\u202eevil", "😀" * 40, "\\", " "],
    *["' OR 1=1 --", "<script>alert(1)</script>", "null", "NaN", "\r\n"],
    *["x" * n for n in (129, 513, 4097, 32_769)],
]
ODD_NUMBERS = [-1, 0, 2**31, 2**63 - 1, -(2**63), 10**18, 1e308, -1e308, 5e-324, -0.0, 0.5]


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def nasty(binary: bool) -> S:
    """A wrong, hostile or absurd value of any type (what the codec can carry:
    NaN, infinities and bytes in msgpack; integers past 64 bits in JSON)."""
    ints = st.integers(-(2**63), 2**64 - 1) if binary else st.integers(-(2**200), 2**200)
    floats = st.floats(allow_nan=binary, allow_infinity=binary)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ints,
        floats,
        st.sampled_from(ODD_NUMBERS),
        st.sampled_from(ODD_TEXT),
        st.text(st.characters(codec=None, categories=None), max_size=20),
        *([st.binary(max_size=20)] if binary else []),
        st.integers(50, 400).map(_nested),  # deep, but still a frame the codecs read
    )
    keys = st.text(max_size=8) | st.sampled_from(["id", "session_id", "__proto__", "\x00"])
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=6,
    )


def mutated(valid: S, binary: bool) -> S:
    """Mostly the valid value, else a nasty one."""
    return st.one_of(valid, valid, nasty(binary))


@st.composite
def _broken(draw: st.DrawFn, valid: S, names: list[str], binary: bool) -> dict[str, Any]:
    """A valid object with one to three changes: a field dropped, given a
    nasty value, or an unknown field added."""
    out: dict[str, Any] = draw(valid)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names) | st.text(max_size=10)) if names else draw(st.text())
        if name in out and draw(st.booleans()):
            del out[name]
        else:
            out[name] = draw(nasty(binary))
    return out


def obj(binary: bool, required: dict[str, S], optional: dict[str, S] | None = None) -> S:
    """An object of these fields: valid (its fields perhaps mutated), or broken."""
    optional = optional or {}
    valid = st.fixed_dictionaries(
        {k: mutated(v, binary) for k, v in required.items()},
        optional={k: mutated(v, binary) for k, v in optional.items()},
    )
    strict = st.fixed_dictionaries(required, optional=optional)
    names = [*required, *optional]
    return st.one_of(strict, strict, valid, _broken(strict, names, binary))


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)
HEX64 = st.text("0123456789abcdefABCDEF", min_size=64, max_size=64)
BOOL = st.booleans()
LAT, LNG = st.floats(-90, 90), st.floats(-180, 180)
SEQ = st.integers(0, 100)
SDP = st.sampled_from(["v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 RTP 0\r\n", "v=0\nm=x"])
PHONE = st.sampled_from(["+639171234567", "+15551234567", "+0000", "639171234567"])


@dataclass
class World:
    """The server, the senders (every role, both codecs) and the ids worth aiming at."""

    server: Harness
    senders: list[EnfClient]
    ids: list[str]
    session_ids: list[str]
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def identifier(self) -> S:
        return st.sampled_from(self.ids) | st.from_regex(r"\A[A-Za-z0-9._@-]{1,128}\Z")

    def session_id(self) -> S:
        known = st.sampled_from(self.session_ids)
        return st.one_of(known, known, st.uuids().map(str))

    def data(self, kind: str, binary: bool) -> S:
        """The `data` of a `kind` request, per PROTOCOL §4, valid or mutated."""
        b = binary
        sid = {"session_id": self.session_id()}
        place = obj(b, {"lat": LAT, "lng": LNG})
        document = obj(b, {"id": self.identifier(), "sha256": HEX64, "type": TEXT, "title": TEXT})
        principal = obj(b, {"name": TEXT}, {"address": TEXT, "id_type": TEXT, "id_number": TEXT})
        candidate = obj(
            b, {"candidate": TEXT}, {"sdpMid": TEXT, "sdpMLineIndex": st.integers(0, 9)}
        )
        recipient = obj(b, {"channel": st.sampled_from(["sms", "webhook"]), "to": PHONE | TEXT})
        offer = {"offer_id": self.identifier()}
        kinds = st.sampled_from(["offer", "answer", "ice"])
        signal = {"sdp": SDP | TEXT, "candidate": candidate}
        checks = {**sid, "comprehension_confirmed": BOOL, "duress_check_passed": BOOL}
        shapes: dict[str, tuple[dict[str, S], dict[str, S]]] = {
            "presence.online": ({}, {"since_seq": SEQ}),
            "presence.set": ({"status": st.sampled_from(["available", "away"])}, {}),
            "presence.offline": ({}, {}),
            "presence.subscribe": ({}, {}),
            "notaries.available": (
                {},
                {
                    "document_type": TEXT,
                    "location": place,
                    "price_preference": st.floats(0, 1e6),
                    "limit": st.integers(1, 100),
                },
            ),
            "session.request": (
                {"idempotency_key": TEXT, "document": document},
                {
                    "principal": principal,
                    "price_preference": st.floats(0, 1e6),
                    "location": place,
                    "preferred_notary_id": self.identifier(),
                },
            ),
            "offer.accept": (offer, {}),
            "offer.decline": (offer, {}),
            "session.join": (
                sid,
                {
                    "since_seq": SEQ,
                    "consent": obj(b, {}, {"recording": BOOL, "privacy": BOOL}),
                    "location": obj(b, {"lat": LAT, "lng": LNG}, {"country": TEXT}),
                },
            ),
            "session.leave": (sid, {}),
            "signal": ({**sid, "to": self.identifier(), "kind": kinds}, signal),
            "video.start": (sid, {}),
            "checks.record": (checks, {}),
            "act.sign": ({**sid, "signature": TEXT}, {}),
            "act.seal": ({**sid, "signature": TEXT, "seal": TEXT}, {}),
            "video.end": (sid, {}),
            "session.notarize": (sid, {}),
            "session.distribute": ({**sid, "recipients": st.lists(recipient, max_size=3)}, {}),
            "session.cancel": ({**sid, "reason": TEXT}, {}),
            "ping": ({}, {}),
        }
        required, optional = shapes[kind]
        data = obj(b, required, optional)
        return st.one_of(data, data, data, nasty(b))

    def frame(self, kind: str, binary: bool) -> S:
        """A request frame without its id: the type, or (for `*`) any type at
        all; its data, or none."""
        kinds = st.just(kind) if kind != "*" else nasty(binary) | st.text(max_size=20)
        data = self.data(kind if kind != "*" else "ping", binary)
        with_data = st.fixed_dictionaries({"type": kinds, "data": data})
        no_data = st.fixed_dictionaries({"type": kinds})
        return st.one_of(with_data, with_data, with_data, with_data, with_data, no_data)

    def fresh_id(self, data: st.DataObject) -> str | int:
        """A request id not used before (PROTOCOL §8): a string, or an integer."""
        n = next(self.counter)
        if data.draw(st.booleans(), label="integer id"):
            return n
        return f"fz{n}-" + data.draw(st.text(ID_CHARS, max_size=8), label="id tail")


ID_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


class AsciiJson(ClientJson):
    """JSON with escapes (`\\ud800`): how a client sends a lone surrogate."""

    def encode(self, msg: dict[str, Any]) -> str:
        return json.dumps(msg)


# The session's own steps first, what ends the call or the session last.
KINDS = (
    "ping presence.subscribe notaries.available session.request session.join signal"
    " checks.record act.sign act.seal video.start offer.accept offer.decline presence.online"
    " presence.set presence.offline session.distribute"
    " *"  # any type: unknown, mistyped
    " session.leave video.end session.notarize session.cancel"
).split()


async def _world(server: Harness) -> World:
    customer, notary, sid = await assigned_session(server)
    await join_both(customer, notary, sid)  # in the call: the act's steps reach the session
    await notary.call("video.start", {"session_id": sid})
    offer_ids = [e["data"]["offer_id"] for e in notary.events if e.get("name") == "offer"]
    senders = [
        customer,
        notary,
        await server.client(ADMIN, "admin"),
        await server.client("c-stranger", "customer", codec="msgpack"),
        await server.client("c-nokyc", "customer", kyc=False),
        await server.client("n-stranger", "enp", codec="msgpack"),
        await server.client(ADMIN, "admin", codec="msgpack"),
    ]
    for c in senders:
        if not c.codec.binary:
            c.codec = AsciiJson()  # sends a lone surrogate as its JSON escape
    ids = ["c1", "n1", ADMIN, "c-stranger", "n-stranger", "recorder", "doc-1", *offer_ids]
    return World(server, senders, ids, [sid, str(uuid.UUID(int=0))])


async def _exchange(c: EnfClient, frame: dict[str, Any]) -> dict[str, Any]:
    """Send `frame` as it is; its one reply."""
    await c.send_raw(frame)
    rid = frame["id"]

    def answered() -> dict[str, Any] | None:
        return next((r for r in c.replies if r.get("re") == rid), None)

    got = await c.wait(lambda: answered() or c.closed.is_set(), REPLY_S)
    assert isinstance(got, dict), f"closed ({c.close_code}) instead of answering {frame!r}"
    return got


def _property(world: World, run: Run, kind: str) -> Callable[[], None]:
    """The property for `kind`: a frame by any sender gets one contract reply."""

    @seed(SEED)
    @FUZZ
    @given(st.data())
    def one_frame(data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(world.senders), label="sender")
        binary = c.codec.binary
        frame = {"id": world.fresh_id(data), **data.draw(world.frame(kind, binary), label="frame")}
        assume(len(c.codec.encode(frame)) <= MAX_FRAME - 1024)
        reply = run(_exchange(c, frame))
        if not reply["ok"]:
            error = reply["error"]
            assert error["code"] in CODES, (c.welcome, frame, reply)
            assert isinstance(error["message"], str) and error["message"], reply
        assert not c.closed.is_set(), (c.close_code, frame)

    return one_frame


UNREADABLE = [
    *["", "{", "[" * 5000, '{"a":' * 3000, "NaN", "1e999", "null", '"frame"', "[]"],
    *['{"type":"ping"}', '{"id":null,"type":"ping"}', '{"id":"","type":"ping"}'],
    *['{"id":true,"type":"ping"}', '{"id":"\\u0000","type":"ping"}'],
    *['{"id":"\\ud800","type":"ping"}', '{"id":"' + "x" * 129 + '","type":"ping"}'],
]


async def _exchange_unreadable(c: EnfClient, raw: str | bytes) -> dict[str, Any]:
    """Write `raw` on the socket itself; the reply without an id (`re: null`) it gets."""
    assert c.ws is not None

    def nulls() -> list[dict[str, Any]]:
        return [r for r in c.replies if r.get("re") is None]

    before = len(nulls())
    await (c.ws.send_bytes(raw) if isinstance(raw, bytes) else c.ws.send_str(raw))
    got = await c.wait(lambda: nulls()[before:] or c.closed.is_set(), REPLY_S)
    assert isinstance(got, list), f"closed ({c.close_code}) instead of answering {raw!r}"
    assert len(got) == 1, got
    reply: dict[str, Any] = got[0]
    return reply


def _unreadable_property(world: World, run: Run) -> Callable[[], None]:
    """Frames that are no request with an id (undecodable, not an object, a
    bad id) get one `bad_request` without `re`, and the socket stays open."""

    @seed(SEED)
    @FUZZ
    @given(st.data())
    def one_frame(data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(world.senders), label="sender")
        raw: str | bytes
        if c.codec.binary:
            raw = data.draw(st.binary(max_size=2048), label="bytes")
        else:
            text = st.text(st.characters(codec="utf-8"), max_size=2048)
            raw = data.draw(st.sampled_from(UNREADABLE) | text, label="text")
        server_codec = MsgpackCodec() if c.codec.binary else JsonCodec()  # reads as the server
        try:
            decoded = server_codec.decode(raw)
        except DecodeError:
            decoded = None
        assume(not (isinstance(decoded, dict) and "id" in decoded and _valid_id(decoded["id"])))
        reply = run(_exchange_unreadable(c, raw))
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", (raw, reply)
        assert not c.closed.is_set(), (c.close_code, raw)

    return one_frame


def _valid_id(rid: Any) -> bool:
    """PROTOCOL §8's request id: a string of 1-128 characters without NUL or
    lone surrogates, or an integer."""
    if isinstance(rid, str):
        return 0 < len(rid) <= 128 and "\x00" not in rid and storable(rid) == rid
    return isinstance(rid, int) and not isinstance(rid, bool)


def _fuzz(world: World, run: Run) -> None:
    """Unreadable frames, then per type a fixed budget of requests (in a worker thread)."""
    _unreadable_property(world, run)()
    for kind in KINDS:
        _property(world, run, kind)()


def _fuzzed(re: Any) -> bool:
    return isinstance(re, int) or (isinstance(re, str) and re.startswith("fz"))


async def test_every_request_fuzzed_gets_one_contract_reply(make_server: MakeServer) -> None:
    server = await make_server(rate_limit=1000.0)
    world = await _world(server)
    loop = asyncio.get_running_loop()

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(REPLY_S * 2)

    assert set(KINDS) - {"*"} == set(REQUESTS), "a request type of the server is not fuzzed"
    await asyncio.to_thread(_fuzz, world, run)

    fuzzed = sum(1 for c in world.senders for r in c.replies if _fuzzed(r.get("re")))
    assert fuzzed >= len(KINDS) * 5, "the fuzzer sent next to nothing"
    for c in world.senders:
        assert c.reply_faults() == [], "not exactly one reply per request"
        assert "server_time" in await c.call("ping")  # the connection still answers
        assert c.welcome is not None
        conns: list[Connection] = server.connections_of(c.welcome["user_id"])
        # Not closing: its writer never failed (a writer runs only while frames wait).
        assert conns and all(not x.closing for x in conns)
    fresh = await server.client("c-fresh", "customer")
    reply = await fresh.call("session.request", {"idempotency_key": "after", "document": doc(2)})
    assert reply["state"] == "REQUESTED"

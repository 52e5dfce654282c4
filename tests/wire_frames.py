"""Frames at the socket level, checked against the AsyncAPI document
(gateway/http/asyncapi.py): `Socket`, a raw aiohttp WebSocket that records
every frame it sends and receives (decoded from the bytes on the wire), and
`FrameChecker`, which finds each frame's message in the document and
validates it with `jsonschema`.

A frame must match exactly one of the messages the document allows at that
point: a frame a client sent, one of the messages the server `receive`s; a
reply (`re` set), one of its request's operation's `reply` messages; any
other frame from the server, one of the messages it `send`s. The document's
objects are open (clients ignore unknown keys); here every object with
`properties` is closed as well, so a key the server sends that the document
does not name fails the check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT7

Frame = dict[str, Any]
URI = "urn:enf:asyncapi"
SUBPROTOCOLS = {"json": "enf.v1.json", "msgpack": "enf.v1.msgpack"}
WAIT_S = 60.0  # the longest wait: a recording stored after video.end


class Socket:
    """One client connection; `log` holds ("sent" | "received", frame) in order."""

    def __init__(self, name: str, codec: str) -> None:
        self.name, self.codec = name, codec
        self.log: list[tuple[str, Frame]] = []
        self.wrong_frame_types: list[str] = []
        self.taken: set[int] = set()  # ids of received frames an `expect` returned
        self._changed = asyncio.Condition()
        self._n = 0
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, url: str, token: str, *, hello: bool) -> Frame:
        """Connect with the token in the header, or in a `hello` frame; the welcome."""
        self._http = aiohttp.ClientSession()
        headers = {} if hello else {"Authorization": f"Bearer {token}"}
        protocol = SUBPROTOCOLS[self.codec]
        self._ws = await self._http.ws_connect(url, protocols=(protocol,), headers=headers)
        assert self._ws.protocol == protocol, (self._ws.protocol, protocol)
        self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))
        if hello:
            await self.send({"type": "hello", "data": {"token": token}})
        return await self.wait(lambda f: f.get("type") == "welcome")

    async def send(self, frame: Any, *, bad: bool = False) -> None:
        """Encode `frame` with the codec, record what the server will decode,
        send it. `bad`: not a frame of the contract, on purpose (not checked;
        its reply is)."""
        assert self._ws is not None
        direction = "sent (bad)" if bad else "sent"
        if self.codec == "json":
            text = json.dumps(frame)
            self.log.append((direction, json.loads(text)))
            await self._ws.send_str(text)
        else:
            raw = msgpack.packb(frame, use_bin_type=True)
            self.log.append((direction, msgpack.unpackb(raw, raw=False)))
            await self._ws.send_bytes(raw)

    async def request(self, kind: str, data: dict[str, Any] | None = None) -> Frame:
        """Send a request; its reply."""
        self._n += 1
        rid = f"{self.name}-{self._n}"
        await self.send({"id": rid, "type": kind, "data": data or {}})
        return await self.wait(lambda f: f.get("re") == rid)

    async def call(self, kind: str, data: dict[str, Any] | None = None) -> Any:
        """A request that must succeed: its reply's data."""
        reply = await self.request(kind, data)
        assert reply["ok"], (self.name, kind, reply)
        return reply["data"]

    async def refused(self, kind: str, data: dict[str, Any], code: str) -> Frame:
        reply = await self.request(kind, data)
        assert not reply["ok"] and reply["error"]["code"] == code, (self.name, kind, reply)
        return reply

    async def expect(self, name: str, topic: str | None = None, **fields: Any) -> Frame:
        """The next event `name` (on `topic`, if given; not returned before)
        whose data has `fields`."""

        def wanted(f: Frame) -> bool:
            data = f.get("data") or {}
            return (
                f.get("type") == "event"
                and f.get("name") == name
                and topic in (None, f.get("topic"))
                and id(f) not in self.taken
                and all(data.get(k) == v for k, v in fields.items())
            )

        event = await self.wait(wanted)
        self.taken.add(id(event))
        return event

    async def wait(self, pred: Callable[[Frame], bool]) -> Frame:
        """The first received frame `pred` holds for, once it has arrived."""

        def found() -> Frame | None:
            return next((f for d, f in self.log if d == "received" and pred(f)), None)

        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        frame = found()
        assert frame is not None
        return frame

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                continue
            binary = msg.type == aiohttp.WSMsgType.BINARY
            if binary != (self.codec == "msgpack"):
                self.wrong_frame_types.append(str(msg.data)[:200])
            frame = msgpack.unpackb(msg.data, raw=False) if binary else json.loads(msg.data)
            async with self._changed:
                self.log.append(("received", frame))
                self._changed.notify_all()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader
        if self._http is not None:
            await self._http.close()


def closed(schema: Any) -> Any:
    """`schema` with every object that lists `properties` closed to others
    (not inside `not`, nor in values: `const`, `enum`)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: closed(s) for name, s in value.items()}
        elif key in ("not", "const", "enum", "default", "examples"):
            out[key] = value
        else:
            out[key] = closed(value)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _names(refs: list[Frame]) -> list[str]:
    return [r["$ref"].rsplit("/", 1)[1] for r in refs]


class FrameChecker:
    """The document's messages, as `jsonschema` validators (open and closed)."""

    def __init__(self, doc: Frame) -> None:
        strict = json.loads(json.dumps(doc))
        strict["components"]["schemas"] = closed(strict["components"]["schemas"])
        for message in strict["components"]["messages"].values():
            message["payload"]["schema"] = closed(message["payload"]["schema"])
        self.open, self.strict = self._validators(doc), self._validators(strict)
        ops = doc["operations"].values()
        self.receives = sorted(
            {m for op in ops if op["action"] == "receive" for m in _names(op["messages"])}
        )
        self.sends = sorted(
            {m for op in ops if op["action"] == "send" for m in _names(op["messages"])}
        )
        # A request message: the messages its reply may be.
        self.replies = {
            name: _names(op["reply"]["messages"])
            for op in ops
            if op["action"] == "receive"
            for name in _names(op["messages"])
        }
        self.seen: dict[str, int] = {}

    @staticmethod
    def _validators(doc: Frame) -> dict[str, Draft7Validator]:
        registry: Registry[Any] = Registry().with_resource(URI, DRAFT7.create_resource(doc))
        return {
            name: Draft7Validator(
                {"$ref": f"{URI}#/components/messages/{name}/payload/schema"}, registry=registry
            )
            for name in doc["components"]["messages"]
        }

    def check(self, sockets: list[Socket]) -> list[str]:
        """Every frame of `sockets` against the document: the faults found
        (and each message matched is counted in `seen`)."""
        faults: list[str] = []
        for s in sockets:
            faults += [f"{s.name}: a frame of the wrong type: {w}" for w in s.wrong_frame_types]
            faults += self._check_socket(s)
        return faults

    def _check_socket(self, s: Socket) -> list[str]:
        faults: list[str] = []
        asked: dict[Any, str] = {}  # request id -> its message ("": a bad frame)
        answered: dict[Any, int] = {}
        for direction, frame in s.log:
            if direction == "sent (bad)":
                if isinstance(frame, dict) and "id" in frame:
                    asked[frame["id"]] = ""
                continue
            if direction == "sent":
                candidates = self.receives
            elif frame.get("re") in asked:  # a reply: its request's replies
                answered[frame["re"]] = answered.get(frame["re"], 0) + 1
                candidates = self.replies.get(asked[frame["re"]], self.sends)
            else:  # events, welcome, and refusals of frames without an id
                candidates = self.sends
            fault, name = self._one(frame, candidates)
            if fault:
                faults.append(f"{s.name} {direction}: {fault}: {json.dumps(frame)[:600]}")
                continue
            self.seen[name] = self.seen.get(name, 0) + 1
            if direction == "sent" and "id" in frame:
                asked[frame["id"]] = name
        faults += [
            f"{s.name}: request {rid} got {answered.get(rid, 0)} replies"
            for rid in asked
            if answered.get(rid, 0) != 1
        ]
        return faults

    def _one(self, frame: Frame, candidates: list[str]) -> tuple[str, str]:
        """("", its message) when exactly one candidate matches, and its closed
        schema too; else (the fault, "")."""
        matched = [m for m in candidates if self.open[m].is_valid(frame)]
        if len(matched) != 1:
            return f"matches {matched or 'none'} of {len(candidates)} messages", ""
        error = best_match(self.strict[matched[0]].iter_errors(frame))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            return f"{matched[0]}: undocumented or wrong at '{where}': {error.message}", ""
        return "", matched[0]

"""The output side of a connection (`Sender`, a base of
`gateway.connection.Connection`): its frames queued and not written yet.

A bounded queue: ephemeral events are dropped when it is full; anything else
closes the socket with 1013 (the client resumes with `since_seq`); a replay
waits for room (`send_waiting`). An `Outbound` exists only while frames
wait: the first frame queued makes one, with a task writing them in order
(`write_all`), dropped once that task has written the last one. An idle
connection has neither; a burst queued in one go is written by one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web

from gateway import protocol as P
from gateway.codec import Codec, utf8_text

if TYPE_CHECKING:
    from gateway.services import Services


class Outbound:
    __slots__ = ("frames", "room", "task")

    def __init__(self) -> None:
        self.frames: deque[str | bytes] = deque()
        self.room: list[asyncio.Future[None]] | None = None  # waiting for room
        self.task: asyncio.Task[None] | None = None  # writing `frames`

    async def wait_room(self) -> None:
        """Until a frame is taken out to be written (or `wake` is called)."""
        room = self.room
        if room is None:
            room = self.room = []
        waiter = asyncio.get_running_loop().create_future()
        room.append(waiter)
        try:
            await waiter
        finally:
            room.remove(waiter)
            if not room and self.room is room:
                self.room = None

    def wake(self) -> None:
        """Every `wait_room` returns (each checks again whether there is room)."""
        for waiter in self.room or ():
            if not waiter.done():
                waiter.set_result(None)


async def write_all(ws: web.WebSocketResponse, out: Outbound) -> None:
    """Write `out.frames` in order, those queued meanwhile too, until none is
    left; raises what the socket raises. Frames queued together (a reply and
    the events it caused, say) go to the socket in one write when they can."""
    frames = out.frames
    while frames:
        if len(frames) > 1:
            direct = _direct(ws)
            if direct is not None:
                await _write_together(direct, out)
                continue
        frame = frames.popleft()
        if out.room:
            out.wake()
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
            continue
        try:
            await ws.send_str(frame)
        except UnicodeEncodeError:  # an unpaired surrogate
            await ws.send_str(utf8_text(frame))


class _Direct(NamedTuple):
    transport: asyncio.Transport
    protocol: Any  # aiohttp's BaseProtocol: writing_paused, _drain_helper()


def _direct(ws: web.WebSocketResponse) -> _Direct | None:
    """The socket's transport, when frames may be written to it directly: no
    compression negotiated (a deflated frame is aiohttp's to make), the socket
    open, and aiohttp's writer as this code knows it (else: one frame at a
    time through aiohttp, as always)."""
    if getattr(ws, "compress", True) or ws.closed:
        return None
    writer = getattr(ws, "_writer", None)
    transport = getattr(writer, "transport", None)
    protocol = getattr(writer, "protocol", None)
    if transport is None or transport.is_closing() or not hasattr(protocol, "_drain_helper"):
        return None
    return _Direct(transport, protocol)


async def _write_together(direct: _Direct, out: Outbound) -> None:
    """Every queued frame, framed as aiohttp's writer frames a server's
    (final, unmasked), in one write: one system call for a burst instead of
    one each; then, as aiohttp does, wait while the socket's buffer is full."""
    frames = out.frames
    chunks = []
    while frames:
        frame = frames.popleft()
        if isinstance(frame, bytes):
            chunks.append(_header(0x2, len(frame)) + frame)
            continue
        try:
            data = frame.encode()
        except UnicodeEncodeError:  # an unpaired surrogate
            data = utf8_text(frame).encode()
        chunks.append(_header(0x1, len(data)) + data)
    if out.room:
        out.wake()
    direct.transport.write(b"".join(chunks))
    if direct.protocol.writing_paused:
        await direct.protocol._drain_helper()


def _header(opcode: int, length: int) -> bytes:
    """A final frame's header (RFC 6455 §5.2), unmasked as a server sends it."""
    if length < 126:
        return _LEN1(0x80 | opcode, length)
    if length < 65536:
        return _LEN2(0x80 | opcode, 126, length)
    return _LEN3(0x80 | opcode, 127, length)


_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack


class Sender:
    """What a connection sends, in order, within the queue's bound."""

    id: str
    ws: web.WebSocketResponse
    codec: Codec
    services: Services
    closing: bool
    _out: Outbound | None  # frames not written yet, while there are

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        raise NotImplementedError

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError

    def send(
        self,
        msg: dict[str, Any],
        *,
        droppable: bool = False,
        frames: dict[str, str | bytes] | None = None,
    ) -> None:
        """Queue a frame. With `frames` (a delivery's, shared by every
        connection it fans out to), the event is encoded once per codec."""
        if self.closing:
            return
        out = self._out
        if out is not None and len(out.frames) >= self.services.settings.outbound_queue:
            if droppable:
                self.services.metrics.outbound_dropped.inc()
                return
            self.services.metrics.slow_clients.inc()
            self.log.warning("client too slow: outbound queue full, closing with 1013")
            self.close_soon(P.CLOSE_TOO_SLOW, "too slow: resume with since_seq")
            return
        if frames is None:
            self._queue(self.codec.encode(msg))
            return
        codec = self.codec
        frame = frames.get(codec.name)
        if frame is None:
            frame = frames[codec.name] = codec.encode(msg)
        self._queue(frame)

    async def send_waiting(self, msg: dict[str, Any]) -> None:
        """Queue a frame, waiting for room (a replay, not a live event)."""
        bound = self.services.settings.outbound_queue
        while not self.closing and self._out is not None and len(self._out.frames) >= bound:
            await self._out.wait_room()
        if not self.closing:
            self._queue(self.codec.encode(msg))

    def _queue(self, frame: str | bytes) -> None:
        """Append a frame; a writer task runs while frames wait."""
        out = self._out
        if out is None:
            out = self._out = Outbound()
        out.frames.append(frame)
        if out.task is None:
            out.task = asyncio.get_running_loop().create_task(
                self._write(out), name=f"ws-writer:{self.id}"
            )

    async def _write(self, out: Outbound) -> None:
        try:
            await write_all(self.ws, out)
        except (ConnectionError, RuntimeError):
            self._gone(out)  # the socket went away; the read loop notices too
        except Exception:
            self.log.exception("writing to the socket failed")
            self._gone(out)
        finally:
            out.task = None
            if not out.frames and self._out is out:
                self._out = None

    def _gone(self, out: Outbound) -> None:
        """Frames can no longer be written: those queued are dropped, and
        nothing more is queued or read."""
        self.closing = True
        out.frames.clear()
        out.wake()

    def close_soon(self, code: int, message: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.spawn(self._close(code, message))

    async def _close(self, code: int, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode())

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until queued frames are written."""
        out = self._out
        if out is not None and out.task is not None:
            await asyncio.wait((out.task,), timeout=timeout)

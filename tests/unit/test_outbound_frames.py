"""Frames queued together go to the socket in one write (gateway.outbound),
framed by our code instead of aiohttp's: a real aiohttp client must read
every one of them, text and binary, short, 16-bit and 64-bit lengths, an
unpaired surrogate replaced, in order; with compression negotiated, aiohttp
frames them one at a time as before."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.outbound import Outbound, write_all

FRAMES: list[str | bytes] = [
    "a",
    "é" * 70,  # 140 bytes: a 16-bit length
    b"\x00\x01binary",
    "x" * 125,
    "y" * 126,
    "z" * 65_535,
    "w" * 65_536,  # a 64-bit length
    b"b" * 200_000,
    "lone \ud800 surrogate",
    '{"type":"event"}',
]
EXPECTED: list[str | bytes] = [
    *FRAMES[:8],
    "lone \\ud800 surrogate",  # its JSON escape (gateway.codec.utf8_text)
    '{"type":"event"}',
]


def app(writes: list[tuple[int, bool]], written: asyncio.Event) -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        out = Outbound()
        out.frames.extend(FRAMES)
        transport: Any = ws._writer.transport if ws._writer else None
        calls = 0
        real_write = transport.write

        def counting(data: bytes) -> None:
            nonlocal calls
            calls += 1
            real_write(data)

        transport.write = counting
        try:
            await write_all(ws, out)
        finally:
            transport.write = real_write
        writes.append((calls, bool(ws.compress)))
        written.set()
        await ws.receive()  # until the client closes
        return ws

    application = web.Application()
    application.router.add_get("/ws", handler)
    return application


async def read_all(ws: aiohttp.ClientWebSocketResponse) -> list[str | bytes]:
    got: list[str | bytes] = []
    while len(got) < len(EXPECTED):
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        got.append(msg.data)
    return got


@pytest.mark.parametrize("compress", [0, 15])
async def test_a_burst_reaches_a_real_client_whole_and_in_order(
    aiohttp_client: Any, compress: int
) -> None:
    writes: list[tuple[int, bool]] = []
    written = asyncio.Event()
    client: TestClient[Any, Any] = await aiohttp_client(app(writes, written))
    async with client.ws_connect("/ws", compress=compress) as ws:
        got = await read_all(ws)
        await ws.close()
    assert got == EXPECTED
    await asyncio.wait_for(written.wait(), 10)
    calls, compressed = writes[0]
    if compress:
        assert compressed and calls >= len(FRAMES)  # aiohttp's way: a write (or more) each
    else:
        assert not compressed and calls == 1  # all of them in one write


async def test_a_burst_larger_than_the_socket_waits_for_the_client(aiohttp_client: Any) -> None:
    """A burst past the transport's buffer leaves the writer waiting for the
    client to read (aiohttp's drain), as one frame at a time did."""
    big = [f"{i:06d}" + "q" * 65_530 for i in range(300)]  # about 20 MB
    paused: list[bool] = []
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        transport: Any = ws._writer.transport if ws._writer else None
        protocol: Any = ws._writer.protocol if ws._writer else None
        real_write = transport.write

        def noting(data: bytes) -> None:
            real_write(data)
            paused.append(protocol.writing_paused)

        transport.write = noting
        out = Outbound()
        out.frames.extend(big)
        await write_all(ws, out)  # one write: returns once the client has read
        done.set()
        await ws.receive()
        return ws

    application = web.Application()
    application.router.add_get("/ws", handler)
    client: TestClient[Any, Any] = await aiohttp_client(application)
    async with client.ws_connect("/ws", max_msg_size=0) as ws:
        got = [(await ws.receive(timeout=10)).data]
        # Without the wait, the writer would have finished in the same step
        # as its write, before this client read anything.
        assert paused == [True] and not done.is_set()
        for _ in big[1:]:
            got.append((await ws.receive(timeout=10)).data)
        await asyncio.wait_for(done.wait(), 10)
        await ws.close()
    assert got == big

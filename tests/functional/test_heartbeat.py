"""The server's pings come from one task for every socket (gateway.heartbeat):
a socket that answers stays open, one that does not is cut, a client's own
ping is answered, before `hello` as after."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import MakeServer
from tests.flows import bearer, eventually

HEARTBEAT_S = 0.5  # a live client answers within it, even on a loaded machine


async def _pings(ws: aiohttp.ClientWebSocketResponse, n: int, *, answer: bool) -> int:
    """Read until `n` pings came (answered or not); how many came before the
    socket closed."""
    seen = 0
    while seen < n:
        msg = await ws.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.PING:
            seen += 1
            if answer:
                await ws.pong(msg.data)
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
        elif msg.type == aiohttp.WSMsgType.ERROR:
            break
    return seen


async def test_a_socket_that_answers_pings_stays_one_that_does_not_is_cut(
    make_server: MakeServer,
) -> None:
    h = await make_server(heartbeat_s=HEARTBEAT_S)
    async with aiohttp.ClientSession() as http:
        live = await http.ws_connect(
            h.ws_url, headers=bearer(h.token("c1", "customer")), autoping=False
        )
        mute = await http.ws_connect(
            h.ws_url, headers=bearer(h.token("c2", "customer")), autoping=False
        )
        assert (await live.receive_json(timeout=5))["type"] == "welcome"
        assert (await mute.receive_json(timeout=5))["type"] == "welcome"
        # The live socket answers its pings all along (six rounds), while the
        # mute one sees its first ping, answers none, and is cut by a later
        # round (no close handshake: the peer is presumed gone).
        answering = asyncio.create_task(_pings(live, 6, answer=True))
        assert await _pings(mute, 1, answer=False) == 1
        while not mute.closed:
            msg = await mute.receive(timeout=10)
            assert msg.type != aiohttp.WSMsgType.TEXT, msg
        assert await answering == 6
        assert not live.closed
        # The server let go of the cut socket (its read loop ended): one left.
        await eventually(lambda: len(h.services.connections) == 1)
        # It is still served: a request gets its reply.
        await live.send_json({"type": "ping", "id": "p1", "data": {}})
        while True:
            msg = await live.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.PING:
                await live.pong(msg.data)
                continue
            reply = msg.json()
            assert reply["re"] == "p1" and "server_time" in reply["data"], reply
            break
        await live.close()


async def test_the_clients_ping_is_answered_before_and_after_hello(
    make_server: MakeServer,
) -> None:
    h = await make_server(heartbeat_s=60)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(h.ws_url, protocols=("enf.v1.json",), autoping=False) as ws,
    ):
        await ws.ping(b"before")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"before")
        await ws.send_json({"type": "hello", "data": {"token": h.token("c1", "customer")}})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.ping(b"after")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"after")

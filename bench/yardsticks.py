"""The yardsticks, bare aiohttp WebSocket servers the benchmarks measure the
server against:

    python bench/yardsticks.py echo PORT    every frame sent back as it came
                                            (/v1/ws): the gateway's cost
    python bench/yardsticks.py relay PORT   clients connect to /relay?id=NAME; a
                                            text frame {"to": NAME, ...} is passed
                                            as it is to that client: the
                                            signaling relay's cost
"""

from __future__ import annotations

import json
import sys

import uvloop
from aiohttp import WSMsgType, web

PEERS: dict[str, web.WebSocketResponse] = {}


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("enf.v1.json",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def relay(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    name = request.query["id"]
    PEERS[name] = ws
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                to = PEERS.get(json.loads(msg.data).get("to"))
                if to is not None:
                    await to.send_str(msg.data)
    finally:
        PEERS.pop(name, None)
    return ws


ROUTES = {"echo": ("/v1/ws", echo), "relay": ("/relay", relay)}


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    path, handler = ROUTES[kind]
    app = web.Application()
    app.router.add_get(path, handler)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: None, access_log=None)


if __name__ == "__main__":
    main()

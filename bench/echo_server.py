"""A bare aiohttp WebSocket echo server: the yardstick for the gateway's cost.

python bench/echo_server.py PORT
"""

from __future__ import annotations

import sys

import uvloop
from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("enf.v1.json",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/v1/ws", echo)
    uvloop.install()
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *_: None, access_log=None
    )


if __name__ == "__main__":
    main()

"""A bare aiohttp WebSocket relay: the yardstick for the signaling relay.
Clients connect to /relay?id=NAME; a text frame {"to": NAME, ...} is passed
as it is to that client.

python bench/relay_server.py PORT
"""

from __future__ import annotations

import json
import sys

import uvloop
from aiohttp import WSMsgType, web

PEERS: dict[str, web.WebSocketResponse] = {}


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


def main() -> None:
    app = web.Application()
    app.router.add_get("/relay", relay)
    uvloop.install()
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *_: None, access_log=None
    )


if __name__ == "__main__":
    main()

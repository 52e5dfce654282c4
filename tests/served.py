"""A server under test as the tests reach it, in this process (conftest's
`Harness`) or as a child process (`ServerProcess`): its URLs, tokens signed
with the tests' key, and connected clients that are closed with it."""

from __future__ import annotations

from typing import Any

from gateway.auth import mint_token
from gateway.client import EnfClient

JWT_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


class Served:
    """What `tests.flows` needs of a server; subclasses say where it listens."""

    def __init__(self) -> None:
        self.clients: list[EnfClient] = []

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server."""
        raise NotImplementedError

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/v1/ws"

    def url(self, path: str) -> str:
        return self.base_url + path

    def token(self, sub: str, role: str, *, kyc: bool = True, **claims: Any) -> str:
        return mint_token(JWT_SECRET, sub, role, kyc=kyc, **claims)

    async def client(
        self, sub: str, role: str, *, codec: str = "json", kyc: bool = True, **claims: Any
    ) -> EnfClient:
        """A connected client of `sub`, closed with the server."""
        c = EnfClient(self.ws_url, self.token(sub, role, kyc=kyc, **claims), codec=codec)
        await c.connect()
        self.clients.append(c)
        return c

    async def close_clients(self) -> None:
        for c in self.clients:
            await c.close()
        self.clients.clear()

"""A server under test as the tests reach it, in this process (conftest's
`Harness`) or as a child process (`ServerProcess`): its URLs, tokens signed
with the tests' key, and connected clients that are closed with it.

Every server made during a test is listed in `REACHED` (emptied by the
safety net in tests/conftest.py before each test), so that the net can ask
each one, after the test, whether a client saw a reply breach the contract
and whether the server logged an error.
"""

from __future__ import annotations

from typing import Any

from enf_client import EnfClient

from gateway.auth import mint_token

JWT_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"

REACHED: list[Served] = []


class Served:
    """What `tests.flows` needs of a server; subclasses say where it listens."""

    def __init__(self) -> None:
        self.clients: list[EnfClient] = []
        self.every_client: list[EnfClient] = []  # closed or not, for the safety net
        REACHED.append(self)

    def reply_faults(self, past_client: bool = False) -> list[str]:
        """Each client's breaches of "exactly one reply per request"; with
        `past_client` (the test wrote frames on the socket itself), only
        second replies."""
        return [
            f"{c.url}: {fault}"
            for c in self.every_client
            for fault in c.reply_faults()
            if not (past_client and fault.startswith("an orphan"))
        ]

    def error_lines(self) -> list[str]:
        """ERROR or worse lines the server logged where the log net in
        tests/conftest.py cannot see them (a child process's log)."""
        return []

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
        self.every_client.append(c)
        await c.connect()
        self.clients.append(c)
        return c

    async def close_clients(self) -> None:
        for c in self.clients:
            await c.close()
        self.clients.clear()

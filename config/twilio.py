"""How to reach Twilio's REST API: its library's async HTTP client, sent to
`ENF_TWILIO_API_BASE` when that is set (a regional proxy, or a local
stand-in of Twilio's API in tests). Used by Twilio Video (media) and SMS
(delivery)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response


class TwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The library's async client, with two changes: requests may go to
    another base URL, and credentials travel as an `Authorization` header
    (the library hands them to aiohttp as `auth=BasicAuth(...)`, which
    aiohttp 3.13 deprecates)."""

    def __init__(self, base: str | None = None) -> None:
        super().__init__()
        self._base = urlsplit(base) if base else None

    async def request(
        self,
        method: str,
        url: str,
        *args: Any,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Response:
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        if self._base is not None:
            url = rebase(url, self._base)
        return await super().request(method, url, *args, headers=headers, **kwargs)


def rebase(url: str, base: SplitResult) -> str:
    parts = urlsplit(url)
    prefix = base.path.rstrip("/")
    return urlunsplit((base.scheme, base.netloc, prefix + parts.path, parts.query, ""))


def twilio_http_client(api_base: str | None) -> AsyncTwilioHttpClient:
    return TwilioHttpClient(api_base)

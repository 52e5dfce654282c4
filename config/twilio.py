"""How to reach Twilio's REST API: its library's async HTTP client, sent to
`ENF_TWILIO_API_BASE` when that is set (a regional proxy, or a local
stand-in of Twilio's API in tests). Used by Twilio Video (media) and SMS
(delivery)."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response


class RebasedClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The library's async client, sending requests to another base URL."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self._base = urlsplit(base)

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return await super().request(method, rebase(url, self._base), *args, **kwargs)


def rebase(url: str, base: SplitResult) -> str:
    parts = urlsplit(url)
    prefix = base.path.rstrip("/")
    return urlunsplit((base.scheme, base.netloc, prefix + parts.path, parts.query, ""))


def twilio_http_client(api_base: str | None) -> AsyncTwilioHttpClient:
    return RebasedClient(api_base) if api_base else AsyncTwilioHttpClient()

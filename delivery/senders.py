"""Outbound deliveries: signed webhooks to ENF_WEBHOOK_URL and text messages
through Twilio's Messages API. Used by the delivery worker
(`delivery/worker.py`), never on a request's path.

Webhook: `POST` with the JSON body `{id, type, session_id, seq, occurred_at,
data}` and headers `X-ENF-Event-Id`, `X-ENF-Timestamp` (Unix seconds) and
`X-ENF-Signature` = hex HMAC-SHA256 over `timestamp + "." + body` with
ENF_WEBHOOK_SECRET. Sealed personal data in the payload is opened just
before sending, and signed links the outbox keeps withheld (the envelope
share link) are signed again then (`core.links.restore_signatures`, with the
link key derived from the PII key): what is sent is the link as it was made.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
from typing import Any

import aiohttp
import asyncpg
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from yarl import URL

from config.twilio import twilio_http_client
from core.links import restore_signatures
from core.text import map_strings
from delivery.worker import Outcome, http_outcome
from persistence.keys import PiiCipher, is_sealed

logger = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{7,14}$")


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _with_links(value: Any, pii: PiiCipher) -> Any:
    """`value` with its withheld links signed again (the outbox keeps none)."""
    return map_strings(value, lambda text: restore_signatures(pii.link_secret, text))


def _open(value: Any, pii: PiiCipher, context: str) -> Any:
    if is_sealed(value):
        return pii.open(value, context)
    if isinstance(value, dict):
        return {k: _open(v, pii, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_open(v, pii, context) for v in value]
    return value


class WebhookSender:
    def __init__(self, url: str, secret: str, pii: PiiCipher, timeout_s: float = 10.0) -> None:
        self.url, self.secret, self.pii = url, secret, pii
        self.key = f"webhook {URL(url).origin()}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, row: asyncpg.Record) -> Outcome:
        payload = _open(_with_links(row["payload"], self.pii), self.pii, row["session_id"] or "")
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-ENF-Event-Id": payload["id"],
            "X-ENF-Timestamp": ts,
            "X-ENF-Signature": sign_webhook(self.secret, ts, body),
        }
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            # A redirect would turn the POST into a GET without the body (and
            # hand our signature to someone else): it is a failure, retried.
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as r:
                text = await r.text(errors="replace")
                return http_outcome(r.status, text if r.status >= 300 else "")
        except TimeoutError:
            return Outcome(False, error="timed out")
        except aiohttp.ClientError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SmsSender:
    """Twilio's Messages API through the library's async client."""

    def __init__(self, pii: PiiCipher, api_base: str | None = None) -> None:
        self.pii = pii
        self.from_number = os.environ.get("TWILIO_FROM_NUMBER")
        self.messaging_service = os.environ.get("TWILIO_MESSAGING_SERVICE_SID")
        http = twilio_http_client(api_base)
        self.client = Client(
            os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"], http_client=http
        )
        self.key = "twilio messages"

    @staticmethod
    def missing() -> str | None:
        """Why SMS cannot be sent here, or None."""
        need = [n for n in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if not os.environ.get(n)]
        if not (
            os.environ.get("TWILIO_FROM_NUMBER") or os.environ.get("TWILIO_MESSAGING_SERVICE_SID")
        ):
            need.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        return f"SMS not configured: set {', '.join(need)}" if need else None

    async def send(self, row: asyncpg.Record) -> Outcome:
        payload = row["payload"]
        to = _open(payload["to"], self.pii, payload.get("context") or row["session_id"] or "")
        if not isinstance(to, str) or not E164.match(to):
            return Outcome(False, permanent=True, error="not a phone number in E.164 form")
        body = _with_links(payload["body"], self.pii)
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if self.messaging_service:
            kwargs["messaging_service_sid"] = self.messaging_service
        else:
            kwargs["from_"] = self.from_number
        try:
            message = await asyncio.wait_for(self.client.messages.create_async(**kwargs), 15)
        except TimeoutError:
            return Outcome(False, error="Twilio timed out")
        except TwilioRestException as exc:
            outcome = http_outcome(exc.status or 500)
            return Outcome(outcome.ok, outcome.permanent, f"Twilio {exc.status}: {exc.msg}")
        except aiohttp.ClientError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        logger.info("sms %s sent (%s)", row["id"], message.sid)
        return Outcome(True)

    async def close(self) -> None:
        await self.client.http_client.close()

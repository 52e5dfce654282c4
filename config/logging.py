"""Log setup: one JSON object per line (default) or a human format, with
personal data and secrets redacted from every record: its message, its extra
fields, and its formatted traceback and stack.

Secrets: JWTs (client tokens, Twilio access tokens), `Authorization` values
(Bearer, Basic), `token=`/`sig=`/`signature=`-like query parameters (signed
links, pre-signed URLs), and passwords in DSNs (`postgresql://user:pass@…`,
`password=…`)."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message"}


# Phone numbers (E.164 or spaced), sealed PII tokens, and values of keys that
# hold personal data when a dict is logged.
_PHONE = re.compile(r"(?<![\w-])\+?\d{10,15}(?![\w-])|\+\d{1,3}[ -]\d{3}[ -]\d{3}[ -]\d{4}")
_SEALED = re.compile(r"pii:v1:[0-9a-f]+:[A-Za-z0-9_=-]+")
PII_KEYS = frozenset({"name", "address", "id_number", "id_type", "phone", "principal", "to"})
REDACTED = "[redacted]"

# Secrets, each with the part that stays (group 1) and the part that goes.
_SECRETS = (
    # A JWT: three base64url parts, the first two JSON objects ("eyJ").
    re.compile(r"()\beyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"),
    # Authorization values.
    re.compile(r"(\b(?i:bearer)\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(\bBasic\s+)[A-Za-z0-9+/]{8,}={0,2}"),
    # Credentials in query strings, forms and key=value text: signed links'
    # signatures, pre-signed URLs, tokens, passwords.
    re.compile(
        r"(?i)((?<![A-Za-z0-9])(?:sig|signature|x-amz-signature|x-amz-security-token"
        r"|x-amz-credential|token|access_token|id_token|refresh_token|password|passwd|pwd"
        r"|secret|api_secret|auth_token|apikey|api_key)=)[^&\s\"',;)]+"
    ),
    # The password of a URL's user info: scheme://user:password@host.
    re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:)[^\s/?#@]+(?=@)"),
)
# Keys whose values are secrets when a dict is logged.
SECRET_KEYS = frozenset(
    {"token", "authorization", "password", "secret", "sig", "signature", "jwt_secret"}
)


def _redact_text(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m[1] + REDACTED, text)
    return _SEALED.sub("pii:v1:[sealed]", _PHONE.sub(REDACTED, text))


def redact(value: Any) -> Any:
    """A copy of `value` with personal data and secrets masked (strings,
    dicts, lists)."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if _hidden_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def _hidden_key(key: Any) -> bool:
    return key in PII_KEYS or (isinstance(key, str) and key.lower() in SECRET_KEYS)


# Correlation: set per connection, per request and per actor message; every
# record made meanwhile carries them (also across the mailbox hop, since the
# actor's run loop sets them from the message it handles).
connection_id: ContextVar[str | None] = ContextVar("connection_id", default=None)
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
session_id: ContextVar[str | None] = ContextVar("session_id", default=None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for var in (connection_id, correlation_id, session_id):
            value = var.get()
            if value is not None and not hasattr(record, var.name):
                setattr(record, var.name, value)
        return True


class RedactingFilter(logging.Filter):
    """Rewrites each record's message, extra fields, traceback and stack
    before any handler formats it (the traceback is formatted here, once, and
    kept redacted in `exc_text`, which formatters reuse). Code should not log
    personal data or secrets at all; this is the net."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = redact(record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the record as it is
            return True
        record.msg, record.args = redact(message), ()
        for key, value in list(vars(record).items()):
            if key in _RESERVED or key.startswith("_"):
                continue
            record.__dict__[key] = REDACTED if _hidden_key(key) else redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = _redact_text(record.stack_info)
        return True


_PLAIN = logging.Formatter()


class _RedactingFormatter(logging.Formatter):
    """What a formatter of ours writes of a traceback or a stack is redacted,
    whether or not the record went through `RedactingFilter`."""

    def formatException(self, ei: Any) -> str:
        return _redact_text(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _redact_text(super().formatStack(stack_info))


class JsonFormatter(_RedactingFormatter):
    """One JSON object per record; message, extra fields, traceback (`exc`)
    and stack (`stack`) redacted."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _redact_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                text = value if isinstance(value, str | int | float | bool) else str(value)
                out[key] = REDACTED if _hidden_key(key) else redact(text)
        if record.exc_info or record.exc_text:
            exc = record.exc_text or self.formatException(record.exc_info)
            out["exc"] = _redact_text(exc)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class ConsoleFormatter(_RedactingFormatter):
    """For a terminal: time, level, logger, message, then the correlation."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{k}={getattr(record, k)}"
            for k in ("correlation_id", "session_id")
            if getattr(record, k, None)
        ]
        # The whole text: message, a traceback cached unredacted by
        # another formatter, the stack.
        return _redact_text(line + (f"  [{' '.join(tags)}]" if tags else ""))


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

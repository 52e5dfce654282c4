"""Log setup: one JSON object per line (default) or a human format, with
personal data redacted from every record."""

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


def redact(value: Any) -> Any:
    """A copy of `value` with personal data masked (strings, dicts, lists)."""
    if isinstance(value, str):
        return _SEALED.sub("pii:v1:[sealed]", _PHONE.sub(REDACTED, value))
    if isinstance(value, dict):
        return {k: REDACTED if k in PII_KEYS else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


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
    """Rewrites each record's message and extra fields before any handler
    formats it. Code should not log personal data at all; this is the net."""

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
            record.__dict__[key] = REDACTED if key in PII_KEYS else redact(value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
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
        return line + (f"  [{' '.join(tags)}]" if tags else "")


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

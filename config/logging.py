"""Log setup: one JSON object per line (default) or a human format, with
personal data redacted from every record."""

from __future__ import annotations

import json
import logging
import re
import sys
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


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

"""Secrets never reach the logs, tracebacks included: a JWT, a bearer
header, a `token=` or `sig=` parameter and a DSN's password, in a record's
message and in the exception it carries, come out redacted from the JSON
formatter (`msg` and `exc`) and the console formatter, with or without the
redacting filter in front."""

from __future__ import annotations

import io
import json
import logging
import sys

import jwt
import pytest

from config.logging import ConsoleFormatter, JsonFormatter, RedactingFilter, redact
from tests.flows import PHONE

TOKEN = jwt.encode({"sub": "alice", "type": "customer"}, "k" * 32, algorithm="HS256")
SIG = "ab" * 32
SECRETS = {
    "jwt": TOKEN,
    "bearer": f"Authorization: Bearer opaque-{SIG[:20]}",
    "query token": f"/v1/ws?token=tok-{SIG[:24]}",
    "share link": f"https://enf.example/v1/envelopes/ENF-1/shared?expires=1893456000&sig={SIG}",
    "presigned": f"https://s3.example/b/k?X-Amz-Signature={SIG}&X-Amz-Expires=900",
    "dsn": "postgresql://enf:hunter2-s3cret@db.internal:5432/enf",
    "keyword dsn": "host=db.internal user=enf password=hunter2-s3cret",
}
LEAKS = (TOKEN, f"opaque-{SIG[:20]}", f"tok-{SIG[:24]}", SIG, "hunter2-s3cret", PHONE)


def _record(message: str, exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord("enf.test", logging.ERROR, __file__, 1, message, (), exc_info)


def _failure(what: str) -> RuntimeError:
    """An exception whose message (and chained cause) carry a secret."""
    try:
        raise ConnectionError(f"cause: {what}")
    except ConnectionError as cause:
        err = RuntimeError(f"call failed for {what} (sms to {PHONE})")
        err.__cause__ = cause
        return err


@pytest.mark.parametrize("kind", sorted(SECRETS))
@pytest.mark.parametrize("filtered", [False, True], ids=["formatter alone", "with the filter"])
def test_the_json_formatter_redacts_message_and_traceback(kind: str, filtered: bool) -> None:
    secret = SECRETS[kind]
    record = _record(f"request with {secret}", _failure(secret))
    if filtered:
        assert RedactingFilter().filter(record)
    line = JsonFormatter().format(record)
    out = json.loads(line)
    assert "RuntimeError: call failed for" in out["exc"] and "ConnectionError" in out["exc"]
    assert "[redacted]" in out["msg"] and "[redacted]" in out["exc"]
    for leak in LEAKS:
        assert leak not in line, (kind, leak)


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_the_console_formatter_redacts_message_and_traceback(kind: str) -> None:
    secret = SECRETS[kind]
    record = _record(f"request with {secret}", _failure(secret))
    # A traceback another formatter cached, unredacted, on the record.
    record.exc_text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    text = ConsoleFormatter().format(record)
    assert "RuntimeError: call failed for" in text and "[redacted]" in text
    for leak in LEAKS:
        assert leak not in text, (kind, leak)


def test_a_handler_with_the_filter_writes_no_secret_of_logger_exception() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("enf.test.tracebacks")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise _failure(SECRETS["share link"]) from None
        except RuntimeError:
            log.exception("delivery of %s failed", SECRETS["dsn"], extra={"token": TOKEN})
        log.warning("stack", stack_info=True, extra={"url": SECRETS["query token"]})
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["token"] == "[redacted]" and "/shared?expires=" in first["exc"]
    assert (
        "&sig=[redacted]" in first["exc"]
        and "stack" in second
        and second["url"] == "/v1/ws?token=[redacted]"
    )
    for leak in LEAKS:
        assert leak not in out.getvalue(), leak


def test_ordinary_text_is_left_alone() -> None:
    plain = (
        "session 0ada666e-d635-5c58-a410-123456789012: GET http://127.0.0.1:8080/v1/sessions,"
        " basic checks passed, the token expired, sig_sha256 kept"
    )
    assert redact(plain) == plain

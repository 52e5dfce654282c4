"""Personal data never reaches the logs: the redacting filter and the JSON
formatter on a record of each kind (the legal record's principal, phone
numbers, sealed values), and ids that look like numbers left alone."""

from __future__ import annotations

import io
import logging

from config.logging import JsonFormatter, RedactingFilter
from tests.flows import ID_NUMBER, NAME, PHONE


def test_log_records_are_redacted() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("enf.test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("sms to %s failed", PHONE)
        log.warning("sms to +63 917 123 4567 failed")
        log.warning("principal %s", {"name": NAME, "id_number": ID_NUMBER, "ok": 1})
        log.warning("sealed %s", "pii:v1:0123abcd:QUJDREVGR0g=")
        log.warning("recipient", extra={"to": PHONE, "session_id": "0ada666e-d635-5c58-a410"})
        log.warning("session 0ada666e-d635-5c58-a410-123456789012 at seq 1234567890123")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    for secret in (PHONE, "917 123 4567", NAME, ID_NUMBER, "QUJDREVGR0g="):
        assert secret not in text, secret
    assert text.count("[redacted]") >= 5
    # Ids are not phone numbers.
    assert "0ada666e-d635-5c58-a410-123456789012" in text

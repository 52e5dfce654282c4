"""Signed, expiring links: `path?expires=…&sig=…`, an HMAC-SHA256 over the
path and the expiry. Recording downloads and shared envelopes use them.

A signed link is a bearer credential: whoever holds it may fetch what it
points to. Where one must be kept before it is handed out (the outbox holds a
distribution's SMS and webhook until they are sent), it is kept *withheld*:
`withhold_signatures` replaces the signature by its SHA-256
(`…?expires=…&sig_sha256=…`), which opens nothing, and
`restore_signatures` makes the very same link again at send time. Only a
link whose signature this server made comes back: a withheld form someone
wrote by hand names no signature anyone can recompute.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

LINK_TTL_S = 15 * 60

# A signed link inside some text, and the same link withheld.
_SIGNED = re.compile(r"\?expires=(?P<expires>-?\d{1,20})&sig=(?P<sig>[0-9a-f]{64})(?![0-9a-f])")
_WITHHELD = re.compile(
    r"\?expires=(?P<expires>-?\d{1,20})&sig_sha256=(?P<digest>[0-9a-f]{64})(?![0-9a-f])"
)
# Where a link ends on the left, how far back it may start, and where its
# signed path starts (every signed path is under /v1/).
_NOT_IN_LINK = re.compile(r"[\s?#\"'<>]")
_MAX_LINK = 2048
_SIGNED_ROOT = "/v1/"


def _mac(secret: str, path: str, expires: int) -> str:
    return hmac.new(secret.encode(), f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()


def sign_path(secret: str, path: str, ttl_s: int = LINK_TTL_S) -> tuple[str, int]:
    """`path?expires=…&sig=…` valid for `ttl_s` seconds; and the expiry."""
    expires = int(time.time()) + ttl_s
    return f"{path}?expires={expires}&sig={_mac(secret, path, expires)}", expires


def check_path(secret: str, path: str, expires: str, sig: str) -> str | None:
    """None if the link is good, else why not."""
    try:
        exp = int(expires)
    except ValueError:
        return "bad expiry"
    if exp < time.time():
        return "the link has expired"
    if not hmac.compare_digest(_mac(secret, path, exp).encode(), sig.encode()):
        return "bad signature"
    return None


def _digest(sig: str) -> str:
    return hashlib.sha256(sig.encode()).hexdigest()


def withhold_signatures(text: str) -> str:
    """`text` with every signed link's signature replaced by its SHA-256: the
    link no longer opens anything, and `restore_signatures` gives it back."""
    if "&sig=" not in text:
        return text
    return _SIGNED.sub(lambda m: f"?expires={m['expires']}&sig_sha256={_digest(m['sig'])}", text)


def restore_signatures(secret: str, text: str) -> str:
    """`text` with every withheld link signed again with `secret`: the same
    link as before it was withheld. A withheld link that this secret did not
    sign (another key, or text written to look like one) stays withheld."""
    if "&sig_sha256=" not in text:
        return text

    def restore(m: re.Match[str]) -> str:
        head = m.string[max(0, m.start() - _MAX_LINK) : m.start()]
        url = _NOT_IN_LINK.split(head)[-1]  # the link up to its query
        expires = int(m["expires"])
        start = url.find(_SIGNED_ROOT)
        while start != -1:  # the signed path: from one of the /v1/ in the link
            sig = _mac(secret, url[start:], expires)
            if hmac.compare_digest(_digest(sig), m["digest"]):
                return f"?expires={m['expires']}&sig={sig}"
            start = url.find(_SIGNED_ROOT, start + 1)
        return m[0]

    return _WITHHELD.sub(restore, text)

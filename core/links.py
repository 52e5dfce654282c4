"""Signed, expiring links: `path?expires=…&sig=…`, an HMAC-SHA256 over the
path and the expiry. Recording downloads and shared envelopes use them."""

from __future__ import annotations

import hashlib
import hmac
import time

LINK_TTL_S = 15 * 60


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

"""What a client reads of its JWT: claims, without verifying them (the
server does): when it expires, when it was issued."""

from __future__ import annotations

import base64
import json


def claim(token: str, name: str) -> float | None:
    """A numeric claim of a JWT (`exp`, `iat`), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        value = claims.get(name)
        return float(value) if isinstance(value, int | float) else None
    except (IndexError, ValueError, AttributeError):
        return None


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (the server does)."""
    return claim(token, "exp")

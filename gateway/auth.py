"""Client tokens: HS256 JWTs with the claims of PROTOCOL §2 and §8 (PyJWT).

Every claim of §2 is required, `exp` included: a token without one is
refused, like one whose lifetime (`exp` - `iat`) exceeds the cap
(ENF_MAX_TOKEN_TTL_S), or whose `sub` is not an identifier (PROTOCOL §8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import jwt

from config.settings import DEFAULT_MAX_TOKEN_TTL_S
from core.errors import ProtocolError
from core.ids import is_identifier
from core.messages import Role

ROLES: frozenset[str] = frozenset({"customer", "enp", "admin"})
MAX_IAT_SKEW_S = 60
OPTIONAL_CLAIMS = (
    "name",
    "license_number",
    "commission_expires",
    "kyc_session_id",
    "face_match_score",
)


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    role: Role
    kyc_verified: bool
    claims: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None  # the token's `exp` (Unix time)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify_token(token: str, secret: str, max_ttl_s: float = DEFAULT_MAX_TOKEN_TTL_S) -> Identity:
    """Return the identity a token proves, or raise ProtocolError('unauthorized')."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            # `iat` is checked below: up to MAX_IAT_SKEW_S ahead is a clock's
            # skew, not a refusal (PROTOCOL §8); PyJWT would refuse any.
            options={
                "require": ["sub", "type", "kyc_verified", "exp", "iat"],
                "verify_iat": False,
            },
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise ProtocolError("unauthorized", "token expired") from None
    except jwt.ImmatureSignatureError:
        raise ProtocolError("unauthorized", "token not valid yet") from None
    except jwt.InvalidTokenError as exc:
        raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
    except (OverflowError, TypeError, ValueError):  # a signed `exp` of Infinity, say
        raise ProtocolError("unauthorized", "invalid token: bad claims") from None
    sub, role, kyc = claims["sub"], claims["type"], claims["kyc_verified"]
    iat, exp = claims["iat"], claims["exp"]
    if not is_identifier(sub):
        raise ProtocolError("unauthorized", "invalid token: bad sub")
    if not isinstance(role, str) or role not in ROLES:
        raise ProtocolError("unauthorized", "invalid token: unknown type")
    if not isinstance(kyc, bool):
        raise ProtocolError("unauthorized", "invalid token: kyc_verified must be a boolean")
    if not _number(iat) or iat > time.time() + MAX_IAT_SKEW_S:
        raise ProtocolError("unauthorized", "invalid token: iat in the future")
    if not _number(exp):
        raise ProtocolError("unauthorized", "invalid token: exp must be a number")
    if exp - iat > max_ttl_s:
        raise ProtocolError("unauthorized", "invalid token: lifetime over ENF_MAX_TOKEN_TTL_S")
    extra = {k: claims[k] for k in OPTIONAL_CLAIMS if k in claims}
    # When the identity was proven: a party whose absence paused an act must
    # come back with a token issued after the pause (PROTOCOL §5).
    extra["iat"] = float(iat)
    return Identity(sub, cast(Role, role), kyc, extra, float(exp))


def mint_token(
    secret: str, sub: str, role: str, *, kyc: bool = False, ttl_s: int = 3600, **claims: Any
) -> str:
    """A token for tests and for trying the server out (`run.py token`)."""
    now = int(time.time())
    body = {"sub": sub, "type": role, "kyc_verified": kyc, "iat": now, "exp": now + ttl_s, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None

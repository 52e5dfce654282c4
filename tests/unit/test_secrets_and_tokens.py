"""Issue 13, class 6 without a server: the generated JWT secret is private
from its first moment, weak secrets are named, tokens carry their expiry
and are held to the lifetime cap; the msgpack codec survives an unpaired
surrogate."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import msgpack
import pytest

from config.settings import MIN_JWT_SECRET_BYTES, Settings
from core.errors import ProtocolError
from gateway.auth import mint_token, verify_token
from gateway.codec import JsonCodec, MsgpackCodec, utf8_text

SECRET = "unit-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Files created as the system would, were nobody careful: umask 0."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_secret_is_private_from_the_start(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a chmod after the fact (the moment it was readable by others).
    monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=None)
    secret, generated = settings.resolve_jwt_secret()
    path = tmp_path / "data" / "jwt.secret"
    assert generated and _mode(path) == 0o600
    assert len(secret.encode()) >= MIN_JWT_SECRET_BYTES
    assert settings.resolve_jwt_secret() == (secret, True)  # kept: the same next time


def test_a_readable_secret_left_by_an_older_version_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    path.write_text("x" * 64)
    path.chmod(0o644)
    secret, _ = Settings(data_dir=tmp_path, jwt_secret=None).resolve_jwt_secret()
    assert secret == "x" * 64 and _mode(path) == 0o600


def test_weak_secrets_are_named() -> None:
    settings = Settings(jwt_secret="CHANGE-ME")
    refusal = settings.weak_secret("CHANGE-ME")
    assert refusal is not None and "9 bytes" in refusal and "ENF_ALLOW_WEAK_SECRET" in refusal
    assert settings.weak_secret("x" * 32) is None
    assert settings.weak_secret("é" * 16) is None  # bytes, not characters
    assert Settings(allow_weak_secret=True).allow_weak_secret
    assert Settings().max_token_ttl_s == 24 * 3600


def test_identity_carries_the_tokens_exp() -> None:
    token = mint_token(SECRET, "u1", "customer", ttl_s=600)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert verify_token(token, SECRET).expires_at == exp


def test_lifetime_cap_is_a_parameter() -> None:
    token = mint_token(SECRET, "u1", "customer", ttl_s=600)
    assert verify_token(token, SECRET, max_ttl_s=600).user_id == "u1"
    with pytest.raises(ProtocolError) as err:
        verify_token(token, SECRET, max_ttl_s=599)
    assert err.value.code == "unauthorized"


def test_a_token_without_exp_is_refused() -> None:
    now = int(time.time())
    body = {"sub": "u1", "type": "customer", "kyc_verified": True, "iat": now}
    with pytest.raises(ProtocolError) as err:
        verify_token(jwt.encode(body, SECRET, algorithm="HS256"), SECRET)
    assert err.value.code == "unauthorized"


def test_codecs_and_an_unpaired_surrogate() -> None:
    msg = {"re": "a", "ok": True, "data": {"x": "a\ud800b", "\udfff": 1}}
    packed = MsgpackCodec().encode(msg)
    assert msgpack.unpackb(packed, raw=False)["data"] == {"x": "a\\ud800b", "\\udfff": 1}
    text = utf8_text(JsonCodec().encode(msg))
    text.encode("utf-8")
    assert JsonCodec().decode(text) == msg  # the same value, spelled as JSON escapes
    plain = {"re": "b", "data": {"x": "é 😀"}}
    assert utf8_text(JsonCodec().encode(plain)) == JsonCodec().encode(plain)

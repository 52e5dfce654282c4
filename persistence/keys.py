"""The server's keys: the Ed25519 key that signs TRUTH envelopes and the
AES-256-GCM key that protects personal data at rest.

Each comes from its file (`ENF_SIGNING_KEY_FILE`, `ENF_PII_KEY_FILE`) or, when
unset, is generated once under `ENF_DATA_DIR` (mode 0600) and reused. Key ids
are derived from the key, so a sealed value or a signature names the key it
needs and a wrong key is told apart from corrupt data.

Owner-only files: every file and folder the server makes from its data (keys,
recordings and the recorder's work files, Twilio downloads, the embedded
database's parent) is made with `private_dir` (0700) and `open_private`
(0600): private from its first moment, never chmod-ed afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

logger = logging.getLogger(__name__)

PII_PREFIX = "pii:v1:"


class KeyFileError(ValueError):
    """A key file that cannot be used (wrong format, wrong size)."""


class PiiKeyMismatch(Exception):
    """Data sealed with another PII key than the one configured."""


class PiiCorrupt(Exception):
    """A sealed value that does not open with its key: altered or truncated."""


# -- owner-only files -------------------------------------------------------------------

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def private_dir(path: Path) -> Path:
    """`path` as a folder, each missing level made readable by its owner only
    (0700; `Path.mkdir(parents=True)` would make the parents 0755). Folders
    that exist are left as they are. Blocking: call it from a thread."""
    missing: list[Path] = []
    level = path
    while not level.is_dir() and level != level.parent:
        missing.append(level)
        level = level.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            if not folder.is_dir():  # a file in the way
                raise
    return path


def open_private(path: Path, *, replace: bool = False) -> BinaryIO:
    """A new file open for writing, readable by its owner only (0600) from
    the moment it exists; its folder is made with `private_dir`. An existing
    file is an error, unless `replace` (it is removed first, never reused
    with its old mode; a symlink in its place is not followed). Blocking."""
    private_dir(path.parent)
    if replace:
        path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, _NEW_FILE, PRIVATE_FILE), "wb")


def _write_private(path: Path, data: bytes) -> None:
    with open_private(path) as f:
        f.write(data)


# -- PII: AES-256-GCM ---------------------------------------------------------------


class PiiCipher:
    """Seals JSON values as `pii:v1:<key id>:<base64url(nonce | ciphertext)>`.
    The associated data binds a value to its context (the session it belongs
    to): a sealed value copied into another session does not open."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise KeyFileError(f"the PII key must be 32 bytes (AES-256), got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"enf-pii" + key).hexdigest()[:16]
        # Derived, separate key for signed links handed to people (SMS).
        self.link_secret = hashlib.sha256(b"enf-links" + key).hexdigest()

    @classmethod
    def load(cls, path: Path | None, data_dir: Path, generate: bool = True) -> PiiCipher:
        path = path or data_dir / "pii.key"
        if not path.exists() and not generate:
            raise KeyFileError(_missing(path, "ENF_PII_KEY_FILE"))
        if not path.exists():
            _write_private(path, base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
            logger.warning("generated a PII key in %s; keep it: without it, data is lost", path)
        raw = path.read_bytes().strip()
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError:
            raise KeyFileError(f"{path}: the PII key must be 32 bytes in base64") from None
        return cls(key)

    def seal(self, value: Any, context: str) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        ct = self._aead.encrypt(nonce, plain, context.encode())
        return f"{PII_PREFIX}{self.key_id}:" + base64.urlsafe_b64encode(nonce + ct).decode()

    def open(self, token: str, context: str) -> Any:
        if not is_sealed(token):
            raise PiiCorrupt("not a sealed value")
        key_id, _, body = token[len(PII_PREFIX) :].partition(":")
        if key_id != self.key_id:
            raise PiiKeyMismatch(
                f"sealed with PII key {key_id}, but the configured key is {self.key_id}"
                " (ENF_PII_KEY_FILE)"
            )
        try:
            blob = base64.urlsafe_b64decode(body)
            plain = self._aead.decrypt(blob[:12], blob[12:], context.encode())
        except (ValueError, InvalidTag):
            raise PiiCorrupt(
                "the sealed value does not open: altered or not for this context"
            ) from None
        return json.loads(plain)

    def open_or_none(self, token: Any, context: str) -> Any:
        """For views: None for absent values; other values pass through."""
        if token is None:
            return None
        return self.open(token, context) if is_sealed(token) else token


def mask(value: str) -> str:
    """What people may see of a phone number or address: +639171234567 ->
    +63*******567."""
    if len(value) <= 6:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 6) + value[-3:]


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PII_PREFIX)


# -- signing: Ed25519 ----------------------------------------------------------------


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def canonical_bytes(value: Any) -> bytes:
    """What is signed: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    key: Ed25519PublicKey

    def describe(self) -> dict[str, str]:
        raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        pem = self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "key_id": self.key_id,
            "alg": "Ed25519",
            "public_key": base64.b64encode(raw).decode(),
            "pem": pem.decode(),
        }


class Signer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = PublicKey(key_id_of(private.public_key()), private.public_key())

    @classmethod
    def load(cls, path: Path | None, data_dir: Path, generate: bool = True) -> Signer:
        path = path or data_dir / "signing_key.pem"
        if not path.exists() and not generate:
            raise KeyFileError(_missing(path, "ENF_SIGNING_KEY_FILE"))
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_private(path, pem)
            logger.warning("generated an envelope signing key in %s", path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: the signing key must be Ed25519")
        return cls(key)

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """The signed object of PROTOCOL §8: {envelope, signature, key_id}."""
        signature = self._private.sign(canonical_bytes(envelope))
        return {
            "envelope": envelope,
            "signature": base64.b64encode(signature).decode(),
            "key_id": self.public.key_id,
        }


def load_public_keys(text: str) -> list[PublicKey]:
    """Public keys from a PEM file or from the JSON of `GET /v1/keys`."""
    text = text.strip()
    if text.startswith("{"):
        body = json.loads(text)
        out = []
        for k in body.get("keys", []):
            raw = base64.b64decode(k["public_key"])
            key = Ed25519PublicKey.from_public_bytes(raw)
            out.append(PublicKey(key_id_of(key), key))
        return out
    loaded = serialization.load_pem_public_key(text.encode())
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyFileError("the public key must be Ed25519")
    return [PublicKey(key_id_of(loaded), loaded)]


def verify_signed(signed: Any, keys: list[PublicKey]) -> tuple[bool, str | None]:
    """(valid, reason). Never raises on bad input: a verdict instead."""
    if not isinstance(signed, dict) or not {"envelope", "signature", "key_id"} <= signed.keys():
        return False, "not a signed envelope: needs envelope, signature and key_id"
    envelope, signature, key_id = signed["envelope"], signed["signature"], signed["key_id"]
    if not isinstance(envelope, dict) or not isinstance(signature, str):
        return False, "envelope must be an object and signature a base64 string"
    key = next((k for k in keys if k.key_id == key_id), None)
    if key is None:
        return False, f"unknown key {key_id!r}: not one of this server's keys"
    try:
        sig = base64.b64decode(signature, validate=True)
    except ValueError:
        return False, "signature is not base64"
    try:
        signed_bytes = canonical_bytes(envelope)
    except UnicodeEncodeError:  # a lone surrogate: nothing this server signs holds one
        return False, "the envelope holds text that is not valid Unicode"
    try:
        key.key.verify(sig, signed_bytes)
    except InvalidSignature:
        return False, "signature does not match the envelope (altered, or signed by another key)"
    return True, None


@dataclass(frozen=True)
class Keys:
    signer: Signer
    pii: PiiCipher

    @classmethod
    def load(
        cls,
        signing_key_file: Path | None,
        pii_key_file: Path | None,
        data_dir: Path,
        generate: bool = True,
    ) -> Keys:
        """The signing and PII keys from their files; missing files are
        generated when `generate` (a single node, or a cluster's first start),
        else refused."""
        return cls(
            Signer.load(signing_key_file, data_dir, generate),
            PiiCipher.load(pii_key_file, data_dir, generate),
        )

    def ids(self) -> dict[str, str]:
        """The key ids (not the keys): what every process of a cluster must share."""
        return {"signing": self.signer.public.key_id, "pii": self.pii.key_id}


def _missing(path: Path, setting: str) -> str:
    return (
        f"{path}: no such key file; every process of a cluster must load the"
        f" cluster's keys: copy them to this node and set {setting}"
    )

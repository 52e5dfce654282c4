"""Where recordings are kept: `ENF_RECORDINGS_URL`, `file://DIR` (default) or
`s3://bucket/prefix` through boto3 (`ENF_S3_ENDPOINT_URL` for S3-compatible
servers). Every store computes the SHA-256 of the bytes while it streams
them; S3 objects are written with server-side encryption, in parts when large.

Blocking I/O (files, boto3) runs in a thread: callers use `await store(...)`.

Stored files are readable by their owner only (0600, in 0700 folders) from
the moment they exist (`persistence.keys.private_dir`, `tempfile.mkstemp`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from core.ids import is_identifier
from core.links import LINK_TTL_S
from persistence.keys import private_dir

CHUNK = 8 * 1024 * 1024  # multipart part size (S3's minimum is 5 MiB)


@dataclass(frozen=True)
class Stored:
    url: str
    sha256: str
    bytes: int


class Storage(Protocol):
    async def store(self, local: Path, key: str) -> Stored: ...

    def link(self, url: str, ttl_s: int = LINK_TTL_S) -> str | None:
        """A short-lived download URL for a stored object (None: serve it here)."""
        ...


def contained(root: Path, *names: str) -> Path:
    """`root/names…` for file names made of outside input (session and user
    ids): each an identifier (PROTOCOL §8) other than `.`/`..`, and the
    result, normalised, inside `root` — else ValueError. Lexical (no disk
    access), so it is safe on the event loop."""
    for name in names:
        if not is_identifier(name) or name in (".", ".."):
            raise ValueError(f"not a safe file name: {name!r}")
    base = os.path.normpath(root)
    path = os.path.normpath(os.path.join(base, *names))
    if base == ".":
        inside = not os.path.isabs(path) and path.split(os.sep)[0] not in (".", "..")
    else:
        inside = path.startswith(base.rstrip(os.sep) + os.sep)
    if not inside:
        raise ValueError(f"{path!r} is not inside {base!r}")
    return Path(path)


class FileStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _copy(self, local: Path, key: str) -> Stored:
        dest = contained(self.root, *key.split("/"))
        if not dest.resolve().is_relative_to(self.root.resolve()):  # a symlink on the way
            raise ValueError(f"{key!r} leads outside the recordings folder")
        private_dir(dest.parent)
        digest, size = hashlib.sha256(), 0
        # Written under a hidden name (0600 from the start), then renamed.
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, local.open("rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Stored(dest.resolve().as_uri(), digest.hexdigest(), size)

    async def store(self, local: Path, key: str) -> Stored:
        return await asyncio.to_thread(self._copy, local, key)

    def link(self, url: str, ttl_s: int = LINK_TTL_S) -> str | None:
        return None  # served by this server under a signed, expiring URL

    def path_of(self, url: str) -> Path | None:
        """The file of a `file://` URL, if it lies under this storage's root."""
        parsed = urlparse(url)
        if parsed.scheme != "file":
            return None
        path = Path(unquote(parsed.path)).resolve()
        root = self.root.resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


class S3Storage:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._s3: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        if not all(is_identifier(n) and n not in (".", "..") for n in key.split("/")):
            raise ValueError(f"not a safe object key: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _upload(self, local: Path, key: str) -> Stored:
        s3, bucket, full = self._s3, self.bucket, self._key(key)
        digest, size = hashlib.sha256(), 0
        with local.open("rb") as f:
            first = f.read(CHUNK)
            digest.update(first)
            size += len(first)
            if len(first) < CHUNK:  # small: one request
                s3.put_object(Bucket=bucket, Key=full, Body=first, ServerSideEncryption="AES256")
            else:
                upload = s3.create_multipart_upload(
                    Bucket=bucket, Key=full, ServerSideEncryption="AES256"
                )
                parts, number, chunk = [], 1, first
                try:
                    while chunk:
                        part = s3.upload_part(
                            Bucket=bucket,
                            Key=full,
                            UploadId=upload["UploadId"],
                            PartNumber=number,
                            Body=chunk,
                        )
                        parts.append({"ETag": part["ETag"], "PartNumber": number})
                        number += 1
                        chunk = f.read(CHUNK)
                        digest.update(chunk)
                        size += len(chunk)
                    s3.complete_multipart_upload(
                        Bucket=bucket,
                        Key=full,
                        UploadId=upload["UploadId"],
                        MultipartUpload={"Parts": parts},
                    )
                except BaseException:
                    s3.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload["UploadId"])
                    raise
        return Stored(f"s3://{bucket}/{full}", digest.hexdigest(), size)

    async def store(self, local: Path, key: str) -> Stored:
        return await asyncio.to_thread(self._upload, local, key)

    def link(self, url: str, ttl_s: int = LINK_TTL_S) -> str | None:
        parsed = urlparse(url)
        return str(
            self._s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": parsed.netloc, "Key": parsed.path.lstrip("/")},
                ExpiresIn=ttl_s,
            )
        )


def storage_for(url: str, endpoint_url: str | None = None) -> FileStorage | S3Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStorage(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError("ENF_RECORDINGS_URL s3://bucket[/prefix] needs a bucket")
        return S3Storage(parsed.netloc, parsed.path, endpoint_url)
    raise ValueError(f"ENF_RECORDINGS_URL must be file://… or s3://…, not {url!r}")


# -- signed links for file:// recordings ----------------------------------------------


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

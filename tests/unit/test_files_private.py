"""Owner-only files, without a server: the helpers every writer uses
(`private_dir`, `open_private`), the generated keys and the file storage of
recordings, under the usual umask (022)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from media.storage import FileStorage
from persistence.keys import Keys, open_private, private_dir


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_dir_makes_every_missing_level_0700(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    deep = tmp_path / "shared" / "a" / "b" / "c"
    assert private_dir(deep) == deep
    assert [mode(p) for p in (deep.parent.parent, deep.parent, deep)] == [0o700] * 3
    assert mode(tmp_path / "shared") == 0o755  # what existed is left alone
    private_dir(deep)  # again: nothing to do
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        private_dir(tmp_path / "file")


def test_open_private_makes_a_new_0600_file_and_never_reuses_one(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f.bin"
    with open_private(path) as f:
        assert mode(path) == 0o600  # from the moment it exists, before any byte
        f.write(b"one")
    assert mode(path.parent) == 0o700 and path.read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        open_private(path)
    old = tmp_path / "old.bin"
    old.write_bytes(b"readable by all")
    old.chmod(0o644)
    with open_private(old, replace=True) as f:
        f.write(b"two")
    assert mode(old) == 0o600 and old.read_bytes() == b"two"
    # A symlink planted in a file's place is not followed.
    target = tmp_path / "target"
    target.write_bytes(b"")
    link = tmp_path / "d" / "link.bin"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        open_private(link)
    assert target.read_bytes() == b""


def test_generated_keys_are_private_and_so_are_their_folders(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    Keys.load(None, None, data)
    assert mode(data.parent) == 0o700 and mode(data) == 0o700
    assert mode(data / "pii.key") == 0o600 and mode(data / "signing_key.pem") == 0o600


async def test_a_stored_recording_is_private_with_its_folders(tmp_path: Path) -> None:
    local = tmp_path / "work.mkv"
    await asyncio.to_thread(local.write_bytes, b"media" * 1000)
    root = tmp_path / "data" / "recordings"
    stored = await FileStorage(root).store(local, "s1/u1.mkv")
    assert stored.bytes == 5000 and stored.url.endswith("/recordings/s1/u1.mkv")
    dest = root / "s1" / "u1.mkv"
    modes = await asyncio.to_thread(
        lambda: [mode(p) for p in (root.parent, root, dest.parent, dest)]
    )
    assert modes == [0o700, 0o700, 0o700, 0o600]
    # Stored again (a re-finalised recording): still private, no temporary left.
    await FileStorage(root).store(local, "s1/u1.mkv")
    left = await asyncio.to_thread(lambda: sorted(p.name for p in dest.parent.iterdir()))
    assert left == ["u1.mkv"] and await asyncio.to_thread(mode, dest) == 0o600

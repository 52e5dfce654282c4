"""Where outside input meets storage (issue 13, classes 1 and 2): a row the
database refuses never blocks the audit rows after it, and no file name made
of outside input leaves its folder."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.errors import ProtocolError
from core.messages import Message
from gateway.auth import Identity
from gateway.requests import parse
from media.recorder import RecorderService, partial_files
from media.storage import FileStorage, S3Storage, contained
from persistence.audit import AuditLog, AuditRecord

BAD_ROWS: list[dict[str, Any]] = [
    {"user_agent": "nul\x00"},
    {"user_agent": "surrogate\ud800"},
    {"resource_id": "\udc80"},
    {"metadata": {"query": {"q": "\x00"}}},
    {"metadata": {"query": {"q\ud83d": "x"}}},
]


async def test_a_row_postgres_refuses_does_not_block_the_others(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    log = AuditLog(pool, max_batch=4)
    for i, bad in enumerate(BAD_ROWS):
        log.record(AuditRecord("http.request", f"good {i}", "ok", f"g{i}"))
        log.record(AuditRecord("http.request", f"bad {i}", "ok", f"b{i}", **bad))
    log.record(AuditRecord("http.request", "last", "ok", "last"))
    await log.flush()
    rows = await pool.fetch("SELECT action FROM audit_log ORDER BY id")
    assert [r["action"] for r in rows] == [f"good {i}" for i in range(len(BAD_ROWS))] + ["last"]
    assert (log.written, log.refused, log.dropped) == (len(BAD_ROWS) + 1, len(BAD_ROWS), 0)
    assert caplog.text.count("audit row refused by the database") == len(BAD_ROWS)
    # And the writer keeps going afterwards.
    log.record(AuditRecord("http.request", "after", "ok", "after"))
    await log.flush()
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'after'") == 1


async def test_the_database_away_keeps_rows_queued(pool: asyncpg.Pool, database: str) -> None:
    """Not a row's fault: nothing is dropped, everything waits."""
    log = AuditLog(pool)
    log.record(AuditRecord("http.request", "bad", "ok", "b", user_agent="\x00"))
    log.record(AuditRecord("http.request", "good", "ok", "g"))
    pool.set_connect_args("postgresql://postgres@127.0.0.1:1/nowhere")
    await pool.expire_connections()
    with pytest.raises(OSError):
        await log.flush()
    assert log.refused == 0 and log.written == 0
    pool.set_connect_args(database)
    await pool.expire_connections()
    await log.flush()
    assert (log.written, log.refused) == (1, 1)


IDENT = Identity("c1", "customer", kyc_verified=True)
ENP = Identity("n1", "enp", kyc_verified=True)


@pytest.mark.parametrize(
    ("ident", "kind", "data"),
    [
        (IDENT, "session.join", {"session_id": "../x"}),
        (IDENT, "session.join", {"session_id": "a/b", "since_seq": 0}),
        (IDENT, "session.leave", {"session_id": "x" * 129}),
        (ENP, "offer.decline", {"offer_id": "a:b"}),
        (IDENT, "session.cancel", {"session_id": "s1", "reason": "\ud800"}),
        (IDENT, "act.sign", {"session_id": "s1", "signature": "x\x00"}),
    ],
)
def test_request_fields(ident: Identity, kind: str, data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(kind, data, ident)
    assert caught.value.code == "bad_request"


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "", "a\x00", "x" * 129, "é"])
def test_contained_refuses_names_that_could_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        contained(tmp_path, "s1", name)


def test_contained_keeps_identifiers_inside(tmp_path: Path) -> None:
    assert contained(tmp_path, "s1", "user@x.org") == tmp_path / "s1" / "user@x.org"


async def test_storage_keys_stay_inside(tmp_path: Path) -> None:
    local = tmp_path / "f.mkv"
    await _write(local)
    store = FileStorage(tmp_path / "recordings")
    for key in ("../outside.mkv", "s1/../../outside.mkv", "/abs.mkv", "s1/a b.mkv"):
        with pytest.raises(ValueError):
            await store.store(local, key)
    stored = await store.store(local, "s1/u1.mkv")
    assert stored.url.endswith("/recordings/s1/u1.mkv")
    assert await asyncio.to_thread(_names, tmp_path) == ["f.mkv", "recordings"]
    with pytest.raises(ValueError):
        S3Storage.__new__(S3Storage)._key("../x")


async def test_the_recorder_takes_no_path_for_a_user_id(tmp_path: Path) -> None:
    told: list[tuple[str, Message]] = []
    recorder = RecorderService(
        tmp_path / "work", FileStorage(tmp_path / "rec"), lambda a, m: told.append((a, m))
    )
    for sid, uid in (("s1", "../../escape"), ("..", "u1"), ("s1", "a/b")):
        with pytest.raises(ProtocolError) as caught:
            await recorder.offer(sid, uid, "v=0\r\n")
        assert caught.value.code == "bad_request"
        with pytest.raises(ProtocolError):
            await recorder.ice(sid, uid, {"candidate": "x"})
    assert recorder.pid is None  # refused before any worker was started
    assert await asyncio.to_thread(partial_files, tmp_path / "work", "..") == []
    assert not told


async def test_the_worker_refuses_a_user_id_that_leaves_its_folder(tmp_path: Path) -> None:
    from media.recorder_worker import Worker

    out = _Lines()
    worker = Worker(tmp_path / "work", out)
    for sid, uid in (("s1", "../../escape"), ("..", "u1")):
        await worker.handle({"op": "offer", "id": 1, "session_id": sid, "user_id": uid, "sdp": ""})
    assert all('"op": "error"' in line for line in out.lines) and len(out.lines) == 2
    assert await asyncio.to_thread(_names, tmp_path) == []


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


async def _write(path: Path) -> None:
    await asyncio.to_thread(path.write_bytes, b"media")


def _names(folder: Path) -> list[str]:
    """What `folder` holds, outside any `work` folder (where refusals would write)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "work") + sorted(
        str(p) for p in folder.rglob("*.mkv") if "work" in p.parts and "recordings" not in p.parts
    )


logging.getLogger("enf.recorder").setLevel(logging.CRITICAL)  # the refusals above, expected


async def test_twilio_callbacks_name_no_path(tmp_path: Path) -> None:
    from tests.twilio_local import Told, local_twilio_video

    told: Told = []
    video = local_twilio_video(tmp_path, told)
    try:
        video.on_callback({"StatusCallbackEvent": "room-ended", "RoomName": "../x"})
        video.on_callback(
            {"StatusCallbackEvent": "recording-completed", "RoomName": "s1", "RecordingSid": "../r"}
        )
        assert set(video.rooms) == set()
        video.on_callback(
            {
                "StatusCallbackEvent": "recording-completed",
                "RoomName": "s1",
                "RecordingSid": "RT1",
                "ParticipantIdentity": "../../escape",
            }
        )
        await asyncio.gather(*video._tasks)
        assert video.rooms["s1"].failed == {"RT1"}  # not kept: no file outside its folder
        assert await asyncio.to_thread(_names, tmp_path) == []
    finally:
        await video.stop()

"""The server's side of the recorder: it runs the recorder worker process
(`media/recorder_worker.py`), relays participants' offers and candidates to it,
and reports back to the session actors.

Reports reach a session as messages to its actor: `recording_started
{user_id}`, `recording_finished {files}`, `recording_failed {reason, files}`,
and `recording_failed {reason, user_id}` when one participant's media stops
arriving (its track ended, its connection failed). If the
worker dies, every session it was recording gets `recording_failed` (with the
partial files, which stay readable), and the next offer starts a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ProtocolError
from core.ids import is_identifier, session_address
from core.messages import Message
from media.storage import Storage
from persistence.keys import private_dir

logger = logging.getLogger(__name__)

Tell = Callable[[str, Message], None]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RecorderService:
    def __init__(
        self, work_dir: Path, storage: Storage, tell: Tell, *, answer_timeout: float = 15.0
    ) -> None:
        self.work_dir = work_dir
        self.storage = storage
        self._tell = tell
        self._answer_timeout = answer_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self.sessions: set[str] = set()  # being recorded by the current worker
        self._finishing: set[asyncio.Task[None]] = set()
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the worker now rather than at the first offer (its imports
        take a second or two, which the first call would otherwise lose)."""
        await self._ensure()

    async def _ensure(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            # The worker's files are private (0600 in 0700 folders): so is their root.
            await asyncio.to_thread(private_dir, self.work_dir)
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "media.recorder_worker",
                "--dir",
                str(self.work_dir),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=PROJECT_ROOT,
                limit=4 * 1024 * 1024,  # answers carry SDP
            )
            logger.info("recorder worker started (pid %d)", self._proc.pid)
            self._reader = asyncio.create_task(self._read(self._proc), name="recorder-reader")
            return self._proc

    async def _send(self, msg: dict[str, Any]) -> None:
        proc = await self._ensure()
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            await proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise ProtocolError("unavailable", "the recorder is restarting, try again") from exc

    async def _request(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._send({**msg, "id": rid})
                reply = await fut
        except TimeoutError:
            raise ProtocolError("unavailable", "the recorder did not answer in time") from None
        finally:
            self._pending.pop(rid, None)
        if reply.get("op") == "error":
            raise ProtocolError("bad_request", f"the recorder refused it: {reply.get('message')}")
        return reply

    # -- what the session actor asks --------------------------------------------

    async def offer(self, session_id: str, user_id: str, sdp: str) -> str:
        _check_names(session_id, user_id)
        reply = await self._request(
            {"op": "offer", "session_id": session_id, "user_id": user_id, "sdp": sdp},
            self._answer_timeout,
        )
        self.sessions.add(session_id)
        return str(reply["sdp"])

    async def ice(self, session_id: str, user_id: str, candidate: dict[str, Any]) -> None:
        _check_names(session_id, user_id)
        if session_id in self.sessions:
            await self._send(
                {"op": "ice", "session_id": session_id, "user_id": user_id, "candidate": candidate}
            )

    def finish(self, session_id: str) -> None:
        """After `video.end` (or at start-up for a session that ended without a
        recording result): finalise the files in the background, then tell the
        session (`recording_finished` or `recording_failed`)."""
        task = asyncio.get_running_loop().create_task(self._finish(session_id))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, session_id: str) -> None:
        actor = session_address(session_id)
        reported: list[dict[str, Any]] = []
        if session_id in self.sessions:
            try:
                reply = await self._request({"op": "stop", "session_id": session_id}, 60.0)
            except ProtocolError as exc:
                if session_id in self.sessions:  # not already reported by the worker's death
                    self.sessions.discard(session_id)
                    await self._report_failure(session_id, exc.message)
                return
            self.sessions.discard(session_id)
            reported = reply["files"]
        # Files of this session from before a restart of the worker or of the
        # server are part of its recording too.
        files = {
            f["path"]: f for f in await asyncio.to_thread(partial_files, self.work_dir, session_id)
        }
        files.update({f["path"]: f for f in reported})
        try:
            tracks = await self._store(session_id, sorted(files.values(), key=lambda f: f["path"]))
        except Exception as exc:
            logger.exception("storing the recording of %s failed", session_id)
            self._tell(
                actor, Message("recording_failed", {"reason": f"storage: {exc}", "tracks": []})
            )
            return
        if not tracks or not any(t["bytes"] for t in tracks):
            self._tell(actor, Message("recording_failed", {"reason": "no_media", "tracks": tracks}))
            return
        self._tell(actor, Message("recording_finished", {"tracks": tracks}))

    async def _store(self, session_id: str, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tracks = []
        for f in files:
            path = Path(f["path"])
            if not f.get("bytes"):
                continue  # nothing was written for this participant
            stored = await self.storage.store(path, f"{session_id}/{path.name}")
            tracks.append(
                {
                    "user_id": f["user_id"],
                    "kind": "audio+video",
                    "url": stored.url,
                    "sha256": stored.sha256,
                    "bytes": stored.bytes,
                    "duration_s": f.get("duration_s"),
                }
            )
        return tracks

    async def _report_failure(self, session_id: str, reason: str) -> None:
        """What was recorded so far is kept (stored, readable) with the failure."""
        try:
            files = await asyncio.to_thread(partial_files, self.work_dir, session_id)
            tracks = await self._store(session_id, files)
        except Exception:
            logger.exception("keeping the partial recording of %s failed", session_id)
            tracks = []
        self._tell(
            session_address(session_id),
            Message("recording_failed", {"reason": reason, "tracks": tracks}),
        )

    # -- reports ---------------------------------------------------------------------

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                logger.warning("recorder said something unreadable: %r", line[:200])
                continue
            fut = self._pending.get(msg.get("id")) if msg.get("id") is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.get("op") == "started":
                self._tell(
                    session_address(msg["session_id"]),
                    Message("recording_started", {"user_id": msg["user_id"]}),
                )
            elif msg.get("op") == "lost":
                # One participant's media no longer reaches the recorder.
                user = msg["user_id"]
                self._tell(
                    session_address(msg["session_id"]),
                    Message(
                        "recording_failed",
                        {"reason": f"no media from {user}", "user_id": user, "tracks": []},
                    ),
                )
            elif msg.get("op") == "error":
                logger.warning("recorder error: %s", msg.get("message"))
        code = await proc.wait()
        if self.stopping:
            return
        logger.error("recorder worker (pid %d) exited with %s", proc.pid, code)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result({"op": "error", "message": "the recorder worker died"})
        lost, self.sessions = self.sessions, set()
        for session_id in lost:
            await self._report_failure(session_id, f"recorder worker died (exit {code})")

    async def stop(self) -> None:
        """Finish every recording (the worker finalises its files when its
        input closes), then wait for the worker to exit."""
        if self._finishing:  # recordings being finalised get to finish first
            await asyncio.wait(list(self._finishing), timeout=10)
        self.stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 8)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def _check_names(session_id: str, user_id: str) -> None:
    """The worker names folders and files after these: identifiers only
    (PROTOCOL §8), never `.`/`..`, so no file lands outside its folder."""
    for what, value in (("session id", session_id), ("user id", user_id)):
        if not is_identifier(value) or value in (".", ".."):
            raise ProtocolError("bad_request", f"the recorder cannot take this {what}")


def partial_files(work_dir: Path, session_id: str) -> list[dict[str, Any]]:
    """What a dead worker left: each file described (readable up to where it
    stopped)."""
    # Not a cycle: the worker's module brings aiortc, which stays out of the
    # server process until a dead worker's files must be described.
    from media.recorder_worker import describe, user_of

    if not is_identifier(session_id) or session_id in (".", ".."):
        return []
    folder = work_dir / session_id
    if not folder.is_dir():
        return []
    return [describe(p, user_of(p)) for p in sorted(folder.glob("*.mkv"))]

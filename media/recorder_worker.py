"""The recorder worker: a separate process (never on the gateway's event loop)
that writes participants' media to files as it arrives, encoded as sent:
VP8, H.264 and Opus are muxed without decoding (`media/passthrough.py`); only
a codec Matroska cannot hold is transcoded, off the loop.

It speaks JSON lines: requests on stdin, replies and reports on stdout.

    {"op": "offer", "id", "session_id", "user_id", "sdp"}  -> {"op": "answer", "id", "sdp"}
    {"op": "ice", "session_id", "user_id", "candidate"}    (trickled candidates)
    {"op": "stop", "id", "session_id"}                      -> {"op": "stopped", "id", "files"}
    reports: {"op": "started", "session_id", "user_id"}     (first frame received)
             {"op": "lost", "session_id", "user_id"}        (its media stopped arriving)
             {"op": "error", "id"?, "session_id"?, "message"}

One RTCPeerConnection per participant; each participant's audio and video go
to `<dir>/<session_id>/<user_id>.mkv` (Matroska is written as it goes, so a
file cut short by a crash of this process stays readable). Folders are made
0700 and each file is created 0600 before the muxer opens it (which keeps
its mode), so a recording is never readable by others, not even for a
moment; the process's umask is 077 besides, for anything else it writes.

    python -m media.recorder_worker --dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from config.logging import RedactingFilter
from media.passthrough import Recording, roomier_sockets
from media.storage import contained
from media.writer import Writer
from persistence.keys import open_private, private_dir

logger = logging.getLogger("enf.recorder")
LINE_LIMIT = 4 * 1024 * 1024


@dataclass
class Peer:
    pc: RTCPeerConnection
    recording: Recording
    path: Path
    started: bool = False
    lost: bool = False


class Worker:
    def __init__(self, root: Path, out: Any) -> None:
        self.root = root
        self.out = out
        self.peers: dict[tuple[str, str], Peer] = {}
        self.writer = Writer()  # muxes every file, off this loop

    def emit(self, msg: dict[str, Any]) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    async def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        try:
            if op == "offer":
                self.emit({"op": "answer", "id": msg["id"], "sdp": await self.offer(msg)})
            elif op == "ice":
                await self.ice(msg)
            elif op == "stop":
                files = await self.stop(msg["session_id"])
                self.emit({"op": "stopped", "id": msg["id"], "files": files})
            else:
                self.emit({"op": "error", "id": msg.get("id"), "message": f"unknown op {op!r}"})
        except Exception as exc:  # one bad request must not end the worker
            logger.exception("recorder request %s failed", op)
            self.emit(
                {
                    "op": "error",
                    "id": msg.get("id"),
                    "session_id": msg.get("session_id"),
                    "message": f"{type(exc).__name__}: {exc}",
                }
            )

    async def offer(self, msg: dict[str, Any]) -> str:
        session_id, user_id = msg["session_id"], msg["user_id"]
        old = self.peers.pop((session_id, user_id), None)
        if old is not None:  # a participant re-negotiating: finish the old file first
            await self._close(old)
        path = self._file_for(session_id, user_id)
        # No STUN/TURN of its own: the server's candidates are its own addresses.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer: Peer

        def first_frame() -> None:
            if not peer.started:
                peer.started = True
                self.emit({"op": "started", "session_id": session_id, "user_id": user_id})

        def media_lost() -> None:
            # Only for the participant's current peer: one replaced by a new
            # offer, or closed by `stop`, has left `peers` already.
            if not peer.lost and self.peers.get((session_id, user_id)) is peer:
                peer.lost = True
                self.emit({"op": "lost", "session_id": session_id, "user_id": user_id})

        peer = Peer(pc, Recording(path, self.writer, first_frame, media_lost), path)

        @pc.on("connectionstatechange")
        def state_changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                media_lost()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    peer.recording.add(track, t.receiver, t.mid)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            roomier_sockets(pc)  # its sockets exist once candidates are gathered
            await peer.recording.start(negotiated(pc.localDescription.sdp))
        except BaseException:
            await self._close(peer)  # nothing half-open stays behind
            raise
        self.peers[(session_id, user_id)] = peer
        return str(pc.localDescription.sdp)

    def _file_for(self, session_id: str, user_id: str) -> Path:
        # Named after ids from outside: `contained` refuses any that would
        # leave the folder (and the resolved path is checked too).
        folder = contained(self.root, session_id)
        contained(folder, user_id)
        private_dir(folder)
        n = sum(1 for p in folder.glob("*.mkv") if user_of(p) == user_id)
        path = _new_file(folder, user_id, n)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"{path} is not inside {self.root}")
        return path

    async def ice(self, msg: dict[str, Any]) -> None:
        peer = self.peers.get((msg["session_id"], msg["user_id"]))
        c = msg.get("candidate") or {}
        if peer is None or not c.get("candidate"):
            return
        cand = candidate_from_sdp(c["candidate"].removeprefix("candidate:"))
        cand.sdpMid = c.get("sdpMid")
        cand.sdpMLineIndex = c.get("sdpMLineIndex")
        await peer.pc.addIceCandidate(cand)

    async def _close(self, peer: Peer) -> None:
        try:
            await peer.recording.stop()
        finally:
            await peer.pc.close()

    async def stop(self, session_id: str) -> list[dict[str, Any]]:
        files = []
        for key in [k for k in self.peers if k[0] == session_id]:
            peer = self.peers.pop(key)
            await self._close(peer)
            frames = peer.recording.frames()
            # Hashing and probing read the whole file: off this loop, which
            # carries other sessions' media.
            files.append(await asyncio.to_thread(describe, peer.path, key[1], frames))
        return files


def negotiated(sdp: str) -> dict[str | None, RTCRtpCodecParameters]:
    """The codec each media section (by mid) of our answer receives: the
    first one listed, which the sender uses."""
    codecs: dict[str | None, RTCRtpCodecParameters] = {}
    for media in SessionDescription.parse(sdp).media:
        usable = [c for c in media.rtp.codecs if c.name.lower() != "rtx"]
        if media.kind in ("audio", "video") and usable:
            codecs[media.rtp.muxId] = usable[0]
    return codecs


def _new_file(folder: Path, user_id: str, n: int) -> Path:
    """The participant's next file, created empty and private (0600): the
    muxer opens it for writing and keeps that mode."""
    while True:
        path = folder / (f"{user_id}.mkv" if n == 0 else f"{user_id}.part{n}.mkv")
        try:
            open_private(path).close()
        except FileExistsError:
            n += 1
            continue
        return path


def user_of(path: Path) -> str:
    """`<user>.mkv` or `<user>.part<n>.mkv` -> user (ids may hold '-' and '.')."""
    stem = path.name.removesuffix(".mkv")
    head, sep, tail = stem.rpartition(".part")
    return head if sep and tail.isdigit() else stem


def describe(path: Path, user_id: str, frames: dict[str, int] | None = None) -> dict[str, Any]:
    """Size, SHA-256 (streamed) and duration (PyAV) of a recorded file."""
    digest = hashlib.sha256()
    size = 0
    if path.exists():
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {
        "user_id": user_id,
        "path": str(path),
        "bytes": size,
        "sha256": digest.hexdigest(),
        "duration_s": probe_duration(path),
        "frames": frames,
    }


def probe_duration(path: Path) -> float | None:
    """Seconds of media in the file, from the packets themselves (a file cut
    short has no duration in its header)."""
    import av

    try:
        with av.open(str(path)) as container:
            last = 0.0
            try:
                for packet in container.demux():
                    if packet.pts is None or packet.stream.time_base is None:
                        continue
                    end = float((packet.pts + (packet.duration or 0)) * packet.stream.time_base)
                    last = max(last, end)
            except av.error.FFmpegError:
                pass  # a file cut short by a crash: what came before counts
            start = min(
                (
                    float(s.start_time * s.time_base)
                    for s in container.streams
                    if s.start_time is not None and s.time_base is not None
                ),
                default=0.0,
            )
            return round(max(0.0, last - start), 3)
    except Exception as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return None


async def main_async(root: Path) -> None:
    worker = Worker(root, sys.stdout)
    loop = asyncio.get_running_loop()
    # Offers carry SDP up to 32 KiB of text, escaped in JSON: room to spare.
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # over the limit: refuse that request, keep serving
            worker.emit({"op": "error", "message": "request too large"})
            continue
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            worker.emit({"op": "error", "message": "undecodable request"})
            continue
        task = asyncio.create_task(worker.handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # stdin closed: the server is gone; finish every recording properly.
    for session_id in {k[0] for k in worker.peers}:
        await worker.stop(session_id)
    await asyncio.to_thread(worker.writer.close)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # its tracebacks are redacted too
        handler.addFilter(RedactingFilter())
    os.umask(0o077)  # whatever this process writes is its owner's only

    import uvloop  # every packet is asyncio work here: uvloop does it for less CPU

    uvloop.run(main_async(Path(args.dir)))


if __name__ == "__main__":
    main()

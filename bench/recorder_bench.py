"""Recorder benchmark with pre-encoded senders: how many 1280x720 participant
streams one recorder worker records in real time as received (passthrough,
`media/passthrough.py`), against the transcoding worker of a git revision
(`--baseline`), in the same run: CPU per stream, frames lost, duration and
A/V sync of the files. The senders replay a clip encoded once (VP8 + Opus),
so they cost little and the recorder is what is measured.

    .venv/bin/python bench/recorder_bench.py [--seconds 10] [--streams 1,5,10,20]

Writes the media-passthrough section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import uvloop
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.media_tracks import MovingPicture, cpu_seconds  # noqa: E402

# -- pre-encoded senders ------------------------------------------------------------------

CLIP_S = 4  # the clip loops; A/V sync is read modulo this


@dataclass
class Clip:
    """A VP8 + Opus clip encoded once: packets sent as they are, looped."""

    video: list[bytes]
    audio: list[bytes]

    @classmethod
    def make(cls, width: int, height: int, kbps: int) -> Clip:
        enc = av.CodecContext.create("libvpx", "w")
        assert isinstance(enc, VideoCodecContext)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.time_base, enc.framerate = Fraction(1, 30), Fraction(30)
        enc.bit_rate = kbps * 1000
        # A keyframe a second: the senders cannot answer a keyframe request.
        enc.options = {"deadline": "realtime", "cpu-used": "8", "g": "30", "lag-in-frames": "0"}
        picture = MovingPicture(width, height)
        video: list[bytes] = []
        for n in range(30 * CLIP_S):
            frame = picture.draw()
            frame.pts, frame.time_base = n, enc.time_base
            video += [bytes(p) for p in enc.encode(frame)]
        video += [bytes(p) for p in enc.encode(None)]
        aenc = av.CodecContext.create("libopus", "w")
        assert isinstance(aenc, AudioCodecContext)
        aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
        aenc.bit_rate = 32000
        audio: list[bytes] = []
        seed = 1
        for m in range(50 * CLIP_S + 5):  # noise, so that every packet differs
            af = AudioFrame(format="s16", layout="stereo", samples=960)
            noise = bytearray()
            for _ in range(960 * 2):
                seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                noise += ((seed >> 16) & 0x0FFF).to_bytes(2, "little")
            af.planes[0].update(bytes(noise))
            af.sample_rate, af.pts = 48000, m * 960
            audio += [bytes(p) for p in aenc.encode(af)]
        return cls(video[: 30 * CLIP_S], audio[: 50 * CLIP_S])


class ClipTrack(MediaStreamTrack):
    """Sends a clip's packets in real time; both tracks of a participant share
    `start`, so video frame n and audio frame m are meant n/30 s and m/50 s in."""

    def __init__(self, kind: str, packets: list[bytes], start: list[float]) -> None:
        super().__init__()
        self.kind = kind
        self.packets = packets
        self.rate = 30 if kind == "video" else 50
        self.time_base = Fraction(1, 30) if kind == "video" else Fraction(1, 48000)
        self.step = 1 if kind == "video" else 960
        self.start = start
        self.sent = 0
        self.late = 0.0  # the most a packet went out after its time
        self.stalls = 0
        self.first: float | None = None
        self.last = 0.0

    async def recv(self) -> av.Packet[Any]:
        if not self.start:
            self.start.append(time.monotonic())
        due = self.start[0] + self.sent / self.rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        now = time.monotonic()
        self.late = max(self.late, now - due)
        if now - due > 0.1:
            # This process fell behind (the machine is shared): it pauses, as a
            # stalled client would, rather than bursting the backlog out.
            self.start[0] += now - due
            self.stalls += 1
        packet = av.Packet(self.packets[self.sent % len(self.packets)])
        packet.pts, packet.time_base = self.sent * self.step, self.time_base
        self.first = self.first if self.first is not None else now
        self.last = now
        self.sent += 1
        return packet


@dataclass
class FileCheck:
    duration_s: float
    sync_ms: float  # audio minus video, in the file versus as sent
    video_frames: int


def check_file(path: Path, clip: Clip) -> FileCheck:
    """Decodes every video frame (playable), and places the clip's packets:
    where each lands in the file minus when it was meant, per kind; the
    difference of the medians is the A/V offset the recording added."""
    where = {"video": {d: i / 30 for i, d in enumerate(clip.video)}}
    where["audio"] = {d: i / 50 for i, d in enumerate(clip.audio)}
    errors: dict[str, list[float]] = {"video": [], "audio": []}
    first, last = float("inf"), 0.0
    with av.open(str(path)) as f:
        for packet in f.demux():
            if packet.pts is None or packet.stream.time_base is None:
                continue
            t = float(packet.pts * packet.stream.time_base)
            first, last = min(first, t), max(last, t)
            meant = where[packet.stream.type].get(bytes(packet))
            if meant is not None:
                errors[packet.stream.type].append((t - meant) % CLIP_S)
    frames = 0
    with av.open(str(path)) as f:
        decoder = f.streams.video[0].codec_context
        for vp in f.demux(video=0):
            try:
                frames += len(decoder.decode(vp))
            except av.FFmpegError:
                pass  # not decodable: counted as lost

    def centre(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    diff = centre(errors["audio"]) - centre(errors["video"])
    diff = (diff + CLIP_S / 2) % CLIP_S - CLIP_S / 2
    return FileCheck(last - first, diff * 1000, frames)


@dataclass
class PassRun:
    worker: str
    streams: int
    seconds: float
    worker_cpu: float
    realtime: float  # streams' worth of media the senders sent in the window
    sender_cpu: float
    sent: int
    recorded: int  # decoded back from the files
    received: int  # counted by the worker
    late_s: float
    stalls: int
    load: float  # the machine's 1-minute load average at the end
    checks: list[FileCheck] = field(default_factory=list)
    sent_s: list[float] = field(default_factory=list)

    @property
    def lost(self) -> float:
        return max(0.0, 1 - self.recorded / self.sent) if self.sent else 1.0

    @property
    def not_received(self) -> float:
        return max(0.0, 1 - self.received / self.sent) if self.sent else 1.0

    @property
    def per_stream(self) -> float:
        """The worker's CPU per stream of real-time media."""
        return self.worker_cpu / self.realtime if self.realtime else float("nan")

    @property
    def worst_duration(self) -> float:
        return max(abs(c.duration_s - s) for c, s in zip(self.checks, self.sent_s, strict=True))

    @property
    def worst_sync(self) -> float:
        return max(abs(c.sync_ms) for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.lost <= 0.01 and self.worst_duration <= 1.0 and self.worst_sync <= 100


async def start_worker(work: Path, script: Path | None) -> asyncio.subprocess.Process:
    """The recorder worker: this tree's, or a script (an older revision's)."""
    cmd = [str(script)] if script else ["-m", "media.recorder_worker"]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *cmd,
        "--dir",
        str(work),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        limit=4 * 1024 * 1024,
    )


async def preencoded_run(
    clip: Clip, streams: int, seconds: float, script: Path | None, label: str
) -> PassRun:
    work = Path(tempfile.mkdtemp(prefix="enf-media-bench-"))
    proc = await start_worker(work, script)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def ask(msg: dict[str, Any], op: str) -> dict[str, Any]:
        stdin.write((json.dumps(msg) + "\n").encode())
        await stdin.drain()
        while True:
            m: dict[str, Any] = json.loads(await asyncio.wait_for(stdout.readline(), 120))
            if m.get("op") == op:
                return m

    pcs, videos, audios = [], [], []
    for i in range(streams):
        pc = RTCPeerConnection()
        start: list[float] = []
        videos.append(ClipTrack("video", clip.video, start))
        audios.append(ClipTrack("audio", clip.audio, start))
        pc.addTrack(videos[-1])
        pc.addTrack(audios[-1])
        await pc.setLocalDescription(await pc.createOffer())
        msg = {"op": "offer", "id": i, "session_id": "bench", "user_id": f"u{i}"}
        answer = await ask({**msg, "sdp": pc.localDescription.sdp}, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        pcs.append(pc)
    await asyncio.sleep(2)  # connect and warm up
    w0, s0, t0 = cpu_seconds(proc.pid), cpu_seconds(os.getpid()), time.monotonic()
    sent0 = sum(v.sent for v in videos)
    await asyncio.sleep(seconds)
    w1, s1, t1 = cpu_seconds(proc.pid), cpu_seconds(os.getpid()), time.monotonic()
    # Streams' worth of media sent in the window (below `streams` when senders stalled).
    realtime = (sum(v.sent for v in videos) - sent0) / (30 * (t1 - t0))
    for pc in pcs:  # senders stop first: everything sent has arrived by the stop
        await pc.close()
    await asyncio.sleep(1)
    stopped = await ask({"op": "stop", "id": "s", "session_id": "bench"}, "stopped")
    stdin.close()
    await proc.wait()
    files = sorted(stopped["files"], key=lambda f: int(f["user_id"][1:]))
    checks = [await asyncio.to_thread(check_file, Path(f["path"]), clip) for f in files]
    return PassRun(
        label,
        streams,
        t1 - t0,
        (w1 - w0) / (t1 - t0),
        realtime,
        (s1 - s0) / (t1 - t0),
        sum(v.sent for v in videos),
        sum(c.video_frames for c in checks),
        sum((f["frames"] or {}).get("video", 0) for f in files),
        max(max(v.late, a.late) for v, a in zip(videos, audios, strict=True)),
        sum(v.stalls + a.stalls for v, a in zip(videos, audios, strict=True)),
        os.getloadavg()[0],
        checks,
        [v.sent / 30 for v in videos],  # the media time sent: what the file should hold
    )


def baseline_script(rev: str) -> Path:
    """The recorder worker as committed at `rev` (git show: reads only)."""
    text = subprocess.run(
        ["git", "show", f"{rev}:media/recorder_worker.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="enf-media-baseline-")) / "recorder_worker.py"
    path.write_text(text)
    return path


async def passthrough_main(args: argparse.Namespace) -> str:
    harness.say(f"encoding the clip: 1280x720 VP8 at {args.kbps} kbit/s + Opus, {CLIP_S} s")
    clip = await asyncio.to_thread(Clip.make, 1280, 720, args.kbps)
    old: Path | None = baseline_script(args.baseline)
    plan = [("transcoding (before)", old, n) for n in args.baseline_streams]
    plan += [("passthrough (after)", None, n) for n in args.streams]  # this tree's worker
    runs = []
    for label, script, n in plan:
        harness.say(f"{label}: {n} stream(s) at 1280x720, {args.seconds:g} s")
        r = await preencoded_run(clip, n, args.seconds, script, label)
        runs.append(r)
        harness.say(
            f"  worker {r.worker_cpu:.0%} of a core ({r.per_stream:.1%} per stream),"
            f" senders {r.sender_cpu:.0%}, lost {r.lost:.2%}, duration off by"
            f" {r.worst_duration:.2f} s, A/V {r.worst_sync:.0f} ms, senders stalled {r.stalls}x,"
            f" load {r.load:.1f}"
        )
    return passthrough_report(args, runs)


def passthrough_report(args: argparse.Namespace, runs: list[PassRun]) -> str:
    lines = [
        "## Media: recording as received (bench/recorder_bench.py)",
        "",
        f"Run on {harness.machine()} (the two cores shared with other work: the senders,"
        " this benchmark's peers, and whatever else the machine ran). Reproduce:",
        "",
        f"    .venv/bin/python bench/recorder_bench.py --seconds {args.seconds:g} --streams "
        f"{','.join(map(str, args.streams))} --baseline-streams "
        f"{','.join(map(str, args.baseline_streams))} --baseline {args.baseline} "
        f"--kbps {args.kbps}",
        "",
        "Each stream is one participant sending 1280x720 VP8 at 30 fps"
        f" ({args.kbps} kbit/s, a keyframe a second) and Opus, pre-encoded: a"
        f" {CLIP_S} s clip encoded once and sent as packets in real time by aiortc peers"
        " in the benchmark process. *Before* is the worker as committed at"
        f" `{args.baseline}` (decodes VP8, encodes H.264/AAC), *after* the worker of this"
        " tree (muxes VP8/Opus as received). Frames lost: video frames sent versus decoded"
        " back from the files (in brackets: versus those the worker counted as received)."
        " Duration: the worst file's difference from the media time"
        " its sender sent. A/V: the worst file's audio-minus-video offset, from where the"
        " clip's packets land in the file versus when they were meant (n/a when the"
        " worker re-encodes: its packets are not the clip's). *OK* = at most 1 % lost,"
        " durations within 1 s, A/V within 100 ms. Per stream: the worker's CPU divided by"
        " the streams' worth of media actually sent in the window. Sender stalls: times a"
        " sender fell more than 100 ms behind (this process starved of CPU) and paused rather than"
        " burst; load avg: the machine's 1-minute load at the end of the run (2 cores).",
        "",
        "| worker | streams | worker CPU (of one core) | per stream | senders' CPU |"
        " frames lost (not received) | duration off | A/V | OK | sender stalls | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in runs:
        sync = "n/a" if r.worst_sync != r.worst_sync else f"{r.worst_sync:.0f} ms"  # NaN
        lines.append(
            f"| {r.worker} | {r.streams} | {r.worker_cpu:.0%} | {r.per_stream:.1%} |"
            f" {r.sender_cpu:.0%} | {r.lost:.2%} ({r.not_received:.2%}) |"
            f" {r.worst_duration:.2f} s |"
            f" {sync} | {'yes' if r.ok else 'no'} | {r.stalls} | {r.load:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--streams", type=_counts, default=[1, 5, 10, 20])
    parser.add_argument("--baseline-streams", type=_counts, default=[1, 2])
    parser.add_argument(
        "--baseline", default="42a2cf2", help="git revision of the transcoding worker (before)"
    )
    parser.add_argument("--kbps", type=int, default=1500)
    harness.add_common_args(parser, database=False)
    args = parser.parse_args()
    harness.publish(args, "media-passthrough", uvloop.run(passthrough_main(args)))


def _counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


if __name__ == "__main__":
    main()

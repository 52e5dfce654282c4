"""Media benchmark: how many participant streams (synthetic 30 fps video with
motion, plus audio) one recorder worker records without falling behind real
time, at 640x480 and 1280x720; and the signaling relay's added latency versus
a bare aiohttp relay, in the same run.

    .venv/bin/python bench/media_bench.py [--seconds 10] [--max-streams 4]

Writes the media section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enf_client import EnfClient  # noqa: E402

from bench import harness  # noqa: E402
from bench.media_tracks import MovingPicture, cpu_seconds  # noqa: E402
from gateway.auth import mint_token  # noqa: E402


@dataclass
class RecorderRun:
    width: int
    height: int
    streams: int
    seconds: float
    worker_cpu: float  # fraction of one core
    sender_cpu: float
    sent: int
    recorded: int
    media_s: float  # shortest recorded file

    @property
    def dropped(self) -> float:
        # Counted a moment apart, so a run that keeps up can come out a hair
        # below zero: shown as 0.
        return max(0.0, 1 - self.recorded / self.sent) if self.sent else 1.0

    @property
    def keeps_up(self) -> bool:
        return self.dropped < 0.05 and self.media_s >= self.seconds - 1.0


async def recorder_run(width: int, height: int, streams: int, seconds: float) -> RecorderRun:
    work = Path(tempfile.mkdtemp(prefix="enf-media-bench-"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "media.recorder_worker",
        "--dir",
        str(work),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            await lines.put(json.loads(line))

    reader = asyncio.create_task(read())

    async def ask(msg: dict[str, Any], op: str) -> dict[str, Any]:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        await proc.stdin.drain()
        while True:
            m = await asyncio.wait_for(lines.get(), 60)
            if m.get("op") == op:
                return m

    pcs, tracks = [], []
    for i in range(streams):
        pc = RTCPeerConnection()
        track = MovingPicture(width, height)
        pc.addTrack(track)
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        answer = await ask(
            {
                "op": "offer",
                "id": i,
                "session_id": "bench",
                "user_id": f"u{i}",
                "sdp": pc.localDescription.sdp,
            },
            "answer",
        )
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        pcs.append(pc)
        tracks.append(track)
    await asyncio.sleep(2)  # connect and warm up
    sent0 = sum(t.sent for t in tracks)
    w0, s0, t0 = cpu_seconds(proc.pid), cpu_seconds(os.getpid()), time.monotonic()
    await asyncio.sleep(seconds)
    w1, s1, t1 = cpu_seconds(proc.pid), cpu_seconds(os.getpid()), time.monotonic()
    sent_window = sum(t.sent for t in tracks) - sent0
    total_sent = sum(t.sent for t in tracks)
    stopped = await ask({"op": "stop", "id": "s", "session_id": "bench"}, "stopped")
    for pc in pcs:
        await pc.close()
    proc.stdin.close()
    await proc.wait()
    reader.cancel()
    files = stopped["files"]
    recorded = sum((f["frames"] or {}).get("video", 0) for f in files)
    wall = t1 - t0
    del sent_window
    return RecorderRun(
        width,
        height,
        streams,
        wall,
        (w1 - w0) / wall,
        (s1 - s0) / wall,
        total_sent,
        recorded,
        # The files also hold the warm-up (about 2 s).
        min((f["duration_s"] or 0.0) for f in files) - 2.0,
    )


async def signaling_latency(n: int) -> tuple[list[float], list[float]]:
    """One-way latency of a signal between the two parties of a session,
    through the ENF server, and through a bare relay."""
    relay_port = harness.free_port()
    relay = harness.start_yardstick("relay", relay_port)
    try:
        async with harness.Scratch(harness.database_url()) as db, harness.Server(db.dsn) as server:
            sessions, notary_ids, cust_tokens, keep = await harness.prepare_sessions(server.url, 1)
            sid = sessions[0]
            customer = EnfClient(server.url, cust_tokens[0])
            await customer.connect()
            await customer.call("session.join", {"session_id": sid})
            notary = EnfClient(server.url, mint_token(harness.SECRET, notary_ids[0], "enp"))
            await notary.connect()
            await notary.call("session.join", {"session_id": sid})
            enf = []
            candidate = {"candidate": "candidate:1 1 UDP 2122260223 10.0.0.1 5000 typ host"}
            for i in range(n):
                notary.drop_inbox()
                t0 = time.perf_counter()
                await customer.send_raw(
                    {
                        "id": f"s{i}",
                        "type": "signal",
                        "data": {
                            "session_id": sid,
                            "to": notary_ids[0],
                            "kind": "ice",
                            "candidate": candidate,
                        },
                    }
                )
                await notary.expect("signal", timeout=10)
                enf.append(time.perf_counter() - t0)
            await harness.close_all([], [customer, notary, *keep])
        direct = []
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(f"ws://127.0.0.1:{relay_port}/relay?id=a")
            b = await s.ws_connect(f"ws://127.0.0.1:{relay_port}/relay?id=b")
            await asyncio.sleep(0.2)
            for i in range(n):
                t0 = time.perf_counter()
                await a.send_str(
                    json.dumps({"to": "b", "kind": "ice", "candidate": candidate, "i": i})
                )
                await b.receive()
                direct.append(time.perf_counter() - t0)
            await a.close()
            await b.close()
    finally:
        relay.kill()
    return enf, direct


async def live_main(args: argparse.Namespace) -> str:
    runs: list[RecorderRun] = []
    for width, height in ((640, 480), (1280, 720)):
        for streams in range(1, args.max_streams + 1):
            harness.say(f"recorder: {streams} stream(s) at {width}x{height}, {args.seconds:.0f} s")
            run = await recorder_run(width, height, streams, args.seconds)
            runs.append(run)
            harness.say(
                f"  worker {run.worker_cpu:.0%} of a core, senders {run.sender_cpu:.0%},"
                f" dropped {run.dropped:.1%}, media {run.media_s:.1f} s"
            )
            if not run.keeps_up:
                break
    harness.say("signaling latency: ENF relay vs bare relay")
    enf, direct = await signaling_latency(args.samples)
    added = harness.pct(enf, 0.5) - harness.pct(direct, 0.5)
    lines = [
        "## Media (bench/media_bench.py)",
        "",
        f"Run on {harness.machine()}. Reproduce:",
        "",
        f"    .venv/bin/python bench/media_bench.py --seconds {args.seconds:g} "
        f"--max-streams {args.max_streams}",
        "",
        "### Recorder worker",
        "",
        "One worker process; each stream is one participant: 30 fps video with a moving "
        "picture (VP8 over WebRTC) plus audio, sent by aiortc peers in the benchmark "
        "process (which shares the two cores). The worker decodes and re-encodes to "
        "H.264/AAC in Matroska. *Keeps up* = under 5 % of frames lost and the recorded "
        "media at least as long as the measured wall time minus 1 s.",
        "",
        "| resolution | streams | worker CPU (of one core) | per stream | senders' CPU |"
        " frames lost | keeps up |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.width}x{r.height} | {r.streams} | {r.worker_cpu:.0%} |"
            f" {r.worker_cpu / r.streams:.0%} | {r.sender_cpu:.0%} | {r.dropped:.1%} |"
            f" {'yes' if r.keeps_up else 'no'} |"
        )
    for size in ("640x480", "1280x720"):
        ok = [r.streams for r in runs if f"{r.width}x{r.height}" == size and r.keeps_up]
        lines.append("")
        lines.append(
            f"- {size}: one worker sustains **{max(ok) if ok else 0}** stream(s) in real time"
            " on this machine."
        )
    lines += [
        "",
        "### Signaling relay",
        "",
        f"One-way latency of a `signal` (an ICE candidate) from one party to the other, "
        f"{args.samples} sequential messages, through the ENF server (validation, session "
        "actor, per-user delivery) and through a bare aiohttp relay, same run:",
        "",
        *harness.latency_table("path", [("ENF `signal`", enf), ("bare relay", direct)]),
        "",
        f"Added by the ENF relay: **{added:.2f} ms** at the median.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--samples", type=int, default=500)
    harness.add_common_args(parser, database=False)
    args = parser.parse_args()
    harness.publish(args, "media", uvloop.run(live_main(args)))


if __name__ == "__main__":
    main()

"""Recording WebRTC media as received: the encoded frames aiortc's receiver
reassembles (VP8, H.264, Opus) are muxed into Matroska with PyAV, with no
decoder and no encoder (as LiveKit's track egress and Janus's recorder do).

How the frames are taken. An aiortc `RTCRtpReceiver` (1.16) depacketizes RTP
into `JitterFrame`s on the event loop and hands each, with its codec, to a
decoder thread through a `queue.Queue`; the decoded frames come back to the
track. For a codec that can be muxed, `Recording.add` replaces that queue's
`put` (on that one receiver) so the encoded frame comes straight to
`Recording._frame`, on the loop, and the decoder thread stays idle; the end of
the stream (`put(None)`, on an RTCP BYE, a lost connection or `stop`) still
goes to the thread, which ends the track as before. A codec Matroska cannot
hold (G.711, G.722) goes to the decoder as before, and its decoded audio is
encoded to Opus in the writer thread: transcoding only where it must, and
never on the loop.

Muxing happens in one writer thread (`Writer`) shared by the recordings: the
loop only stamps each frame and queues it. Timestamps: each track's RTP
timestamps (aiortc rebases them to 0 at its first frame) are placed on the
recording's clock at that first frame's arrival, less what aiortc's jitter
buffer held it (`HOLD`), so audio and video start in step. Keyframe requests
(PLI): when a video track's first frame is not a keyframe (frames are dropped
until one comes, a file cannot start on a delta frame), again every
`PLI_INTERVAL_S` while waiting, and after a gap in the timestamps (frames
lost); aiortc sends its own on jitter-buffer overflow.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError
from av.video.codeccontext import VideoCodecContext

from media.writer import Writer

logger = logging.getLogger("enf.recorder")

# Matroska in live mode, a cluster every second, and every packet flushed to
# the file: if this process is killed, at most the last second is lost and
# the file stays readable (no index needed).
CRASH_SAFE = {
    "live": "1",
    "cluster_time_limit": "1000",
    "flush_packets": "1",
    "max_interleave_delta": "500000",
}
# Codec (RTP name, lower case) -> Matroska stream codec, muxed as received.
PASSTHROUGH = {"vp8": "vp8", "h264": "h264", "opus": "opus"}
# How long aiortc's jitter buffer holds a frame before handing it on: audio
# waits for 4 more 20 ms packets (prefetch=4), video for the next frame's
# first packet (about one frame at 30 fps).
HOLD = {"audio": 0.080, "video": 0.033}
PLI_INTERVAL_S = 0.5
GAP_S = 0.2  # video timestamps jumping more than this (and 3 frames) = frames lost
HEADER_WAIT_S = 3.0  # another video track's keyframe is not waited for longer
QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"  # aiortc 1.16's receiver -> decoder queue


RECEIVE_BUFFER = 4 * 1024 * 1024  # per socket; the kernel caps it at net.core.rmem_max


def roomier_sockets(pc: RTCPeerConnection) -> int:
    """Give the connection's UDP sockets a 4 MiB receive buffer (aioice asks
    for 256 KiB): with many streams on a shared machine, that is what keeps
    packets when this process is not scheduled for a moment. Best effort
    (aioice's internals); how many sockets it reached."""
    done = 0
    for t in pc.getTransceivers():
        connection = getattr(t.receiver.transport.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", []):
            transport = getattr(protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
                done += 1
    return done


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether an encoded frame starts a picture on its own."""
    if codec == "vp8":  # RFC 6386 9.1: frame tag bit 0 clear = key frame
        return len(data) >= 10 and not data[0] & 1
    if codec == "h264":  # Annex B as aiortc depayloads it: an IDR slice (NAL type 5)
        at = data.find(b"\x00\x00\x01")
        while at >= 0 and at + 3 < len(data):
            if data[at + 3] & 0x1F == 5:
                return True
            at = data.find(b"\x00\x00\x01", at + 3)
        return False
    return True  # audio frames all stand alone


def frame_size(codec: str, data: bytes) -> tuple[int, int] | None:
    """The picture size a keyframe announces."""
    if codec == "vp8":  # RFC 6386 9.1: start code, then 14-bit width and height
        if data[3:6] != b"\x9d\x01\x2a":
            return None
        return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(
            data[8:10], "little"
        ) & 0x3FFF
    try:  # H.264: the SPS says it, cropped; one keyframe decoded per file to read it
        decoder = av.CodecContext.create(codec, "r")
        assert isinstance(decoder, VideoCodecContext)
        for frame in [*decoder.decode(av.Packet(data)), *decoder.decode(None)]:
            return int(frame.width), int(frame.height)
    except av.FFmpegError:
        pass
    return None


class Track:
    """One received track of a recording: its stream in the file and the
    state that stamps its frames."""

    def __init__(self, track: MediaStreamTrack, receiver: RTCRtpReceiver, mid: str | None) -> None:
        self.track = track
        self.receiver = receiver
        self.mid = mid
        self.kind: str = track.kind
        self.codec = ""  # RTP codec name, lower case, once negotiated
        self.index = -1  # stream index in the file
        self.passthrough = False
        self.offset: int | None = None  # clock ticks from the recording's origin
        self.last_ts: int | None = None
        self.last_step = 0
        self.waiting_key = track.kind == "video"
        self.last_pli = 0.0
        self.frames = 0
        self.dropped = 0
        self.samples = 0  # transcoded audio written so far


class Recording:
    """One participant's file: its tracks muxed into one Matroska file."""

    def __init__(
        self, path: Path, writer: Writer, on_first: Callable[[], None], on_end: Callable[[], None]
    ) -> None:
        self.path = path
        self.writer = writer
        self.tracks: list[Track] = []
        self._on_first = on_first
        self._on_end = on_end
        self._origin = time.monotonic()
        self._container: Any = None
        self._streams: list[Any] = []  # once the header is written
        self._sizes: dict[int, tuple[int, int] | None] = {}  # video picture sizes
        self._first_size_at: float | None = None
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Future[None]] = set()  # PLIs being sent
        self._open = False
        self._closed = False
        self.started = False

    # -- on the loop -----------------------------------------------------------

    def add(self, track: MediaStreamTrack, receiver: RTCRtpReceiver, mid: str | None) -> None:
        """A track of the participant (from `pc.on("track")`, before the
        connection starts): its frames come to this recording."""
        t = Track(track, receiver, mid)
        self.tracks.append(t)
        q = getattr(receiver, QUEUE_ATTR, None)
        if not isinstance(q, queue.Queue):
            raise RuntimeError("this aiortc's receiver has no decoder queue to take frames from")
        decode = q.put

        def put(item: Any, block: bool = True, timeout: float | None = None) -> None:
            # (codec, JitterFrame) from the receiver, on the loop; None = end.
            if item is not None and t.passthrough:
                self._frame(t, item[0], item[1])
            else:  # to the decoder thread: the end of the track, or transcoding
                decode(item, block, timeout)

        setattr(q, "put", put)  # noqa: B010  (this queue only)

    async def start(self, codecs: dict[str | None, RTCRtpCodecParameters]) -> None:
        """Open the file for a stream per track, of its negotiated codec
        (`codecs` by mid). The header is written at the first video keyframe
        (Matroska wants the picture size; what comes before waits in memory),
        and from then on every packet is flushed as it comes."""
        for i, t in enumerate(self.tracks):
            t.index = i
            codec = codecs.get(t.mid)
            t.codec = codec.name.lower() if codec is not None else ""
            t.passthrough = t.codec in PASSTHROUGH
            if t.kind == "video" and not t.passthrough:
                raise ValueError(f"no video codec the recorder can keep ({t.codec or 'none'})")
        await self.writer.call(self._open_file)
        self._open = True
        for t in self.tracks:
            self._tasks.append(asyncio.create_task(self._watch(t), name=f"recording-{t.kind}"))

    async def stop(self) -> None:
        """Finish the file (what is queued is written first)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._open:
            await self.writer.call(self._close_file)

    def frames(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for t in self.tracks:
            counted[t.kind] = counted.get(t.kind, 0) + t.frames
        return counted

    async def _watch(self, t: Track) -> None:
        """Reads the track: its end (media no longer arrives), and the
        decoded frames of a codec that must be transcoded."""
        while True:
            try:
                frame = await t.track.recv()
            except MediaStreamError:
                self._on_end()
                return
            if self._closed or t.passthrough or not isinstance(frame, av.AudioFrame):
                continue
            if t.offset is None:
                t.offset = self._offset(t, frame.sample_rate)
            self._counted(t)
            self.writer.submit(self._encode, t, frame)

    def _frame(self, t: Track, codec: RTCRtpCodecParameters, frame: Any) -> None:
        """An encoded frame from the receiver, on the loop: stamped and queued."""
        if self._closed or not self._open:
            return
        if codec.name.lower() != t.codec:  # the sender switched codec: not in this file
            t.dropped += 1
            return
        clock = codec.clockRate
        ts: int = frame.timestamp
        data: bytes = frame.data
        if t.offset is None:
            t.offset = self._offset(t, clock)
        if t.last_ts is not None and ts <= t.last_ts:
            t.dropped += 1  # not after the last one (a restarted stream): unmuxable
            return
        key = is_keyframe(t.codec, data)
        if t.kind == "video":
            if not self._video_ok(t, ts, clock, key):
                return
            if t.last_ts is not None:
                t.last_step = ts - t.last_ts
        t.last_ts = ts
        self._counted(t)
        self.writer.submit(self._mux, t.index, data, t.offset + ts, clock, key)

    def _video_ok(self, t: Track, ts: int, clock: int, key: bool) -> bool:
        """Keyframe requests; False while no keyframe has come yet."""
        now = time.monotonic()
        if t.waiting_key and key:
            t.waiting_key = False
        elif t.waiting_key:
            t.dropped += 1
            if now - t.last_pli >= PLI_INTERVAL_S:
                self._request_keyframe(t, now)
            return False
        elif t.last_ts is not None and t.last_step:
            step = ts - t.last_ts
            if step > max(3 * t.last_step, GAP_S * clock) and now - t.last_pli >= PLI_INTERVAL_S:
                self._request_keyframe(t, now)  # frames were lost on the way
        return True

    def _request_keyframe(self, t: Track, now: float) -> None:
        t.last_pli = now
        for source in t.receiver.getSynchronizationSources():
            task = asyncio.ensure_future(t.receiver._send_rtcp_pli(source.source))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    def _offset(self, t: Track, clock: int) -> int:
        """Where the track's first frame sits on the recording's clock (ticks)."""
        return max(0, round((time.monotonic() - self._origin - HOLD[t.kind]) * clock))

    def _counted(self, t: Track) -> None:
        t.frames += 1
        if not self.started:
            self.started = True
            self._on_first()

    # -- in the writer thread --------------------------------------------------

    def _open_file(self) -> None:
        self._container = av.open(str(self.path), "w", format="matroska", options=CRASH_SAFE)
        if not any(t.kind == "video" for t in self.tracks):
            self._write_header()

    def _write_header(self) -> None:
        """Declare every track's stream and write the header: once each video
        track's first keyframe has told its picture size (Matroska wants it)."""
        container = self._container
        # A video track that never sent a keyframe gets another's size (or a
        # stand-in): players take the size from the pictures themselves.
        known = [size for size in self._sizes.values() if size] or [(640, 480)]
        for t in self.tracks:
            if t.kind == "video":
                width, height = self._sizes.get(t.index) or known[0]
                stream = container.add_mux_stream(PASSTHROUGH[t.codec], width=width, height=height)
                stream.time_base = Fraction(1, 90000)
            else:
                # An Opus stream with an encoder context: the header then
                # carries the OpusHead Matroska wants (and a transcoded track
                # is encoded with it).
                stream = container.add_stream("libopus", rate=48000, layout="stereo")
                stream.time_base = Fraction(1, 48000)
            self._streams.append(stream)
        try:
            if not any(t.codec == "h264" for t in self.tracks):
                container.start_encoding()
            # else PyAV writes it at the first H.264 packet (a keyframe: frames
            # before one are dropped), with the SPS/PPS it finds there as the
            # track's CodecPrivate.
        except BaseException:
            self._container = None  # nothing more goes into a file without a header
            container.close()
            raise
        pending, self._pending = self._pending, []
        for fn, args in pending:
            fn(*args)

    def _header_due(self, index: int, data: bytes, key: bool) -> bool:
        """Whether the header can be written now (with this frame's size)."""
        if key and self.tracks[index].kind == "video" and not self._sizes.get(index):
            self._sizes[index] = frame_size(self.tracks[index].codec, data)
        video = [i for i, t in enumerate(self.tracks) if t.kind == "video"]
        if all(self._sizes.get(i) for i in video):
            return True
        first = self._first_size_at
        if any(self._sizes.values()) and first is None:
            self._first_size_at = time.monotonic()
        return first is not None and time.monotonic() - first > HEADER_WAIT_S

    def _mux(self, index: int, data: bytes, pts: int, clock: int, key: bool) -> None:
        if self._container is None:
            return
        if not self._streams:
            if not self._header_due(index, data, key):
                self._pending.append((self._mux, (index, data, pts, clock, key)))
                return
            self._write_header()
        packet = av.Packet(data)
        packet.stream = self._streams[index]
        packet.time_base = Fraction(1, clock)
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        self._container.mux_one(packet)

    def _encode(self, t: Track, frame: av.AudioFrame) -> None:
        if self._container is None or t.offset is None:
            return
        if not self._streams:
            self._pending.append((self._encode, (t, frame)))
            return
        frame.pts = t.offset + t.samples
        frame.time_base = Fraction(1, frame.sample_rate)
        t.samples += frame.samples
        stream = self._streams[t.index]
        for packet in stream.encode(frame):
            self._container.mux_one(packet)

    def _close_file(self) -> None:
        if self._container is None:
            return
        if not self._streams:  # no keyframe came: what was received is kept
            self._write_header()
        container, self._container = self._container, None
        try:
            for t in self.tracks:
                if not t.passthrough and t.samples:
                    for packet in self._streams[t.index].encode(None):
                        container.mux_one(packet)
        finally:
            container.close()

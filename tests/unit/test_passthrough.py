"""The recorder's passthrough (media/passthrough.py): encoded frames taken
from an aiortc receiver's decoder queue are muxed into Matroska as they are,
keyframes first, stamped on one clock, flushed as they go; a codec Matroska
cannot hold goes to the decoder instead."""

from __future__ import annotations

import asyncio
import queue
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

from media.passthrough import QUEUE_ATTR, Recording, frame_size, is_keyframe, roomier_sockets
from media.recorder_worker import probe_duration
from media.writer import Writer

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)


class Source:
    def __init__(self, ssrc: int) -> None:
        self.source = ssrc


class FakeReceiver:
    """What `Recording` uses of an aiortc 1.16 `RTCRtpReceiver`."""

    def __init__(self) -> None:
        setattr(self, QUEUE_ATTR, queue.Queue())
        self.plis: list[int] = []

    @property
    def queue(self) -> queue.Queue[Any]:
        q: queue.Queue[Any] = getattr(self, QUEUE_ATTR)
        return q

    def getSynchronizationSources(self) -> list[Source]:
        return [Source(1234)]

    async def _send_rtcp_pli(self, ssrc: int) -> None:
        self.plis.append(ssrc)


class FakeTrack(MediaStreamTrack):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.frames: asyncio.Queue[Any] = asyncio.Queue()

    async def recv(self) -> Any:
        frame = await self.frames.get()
        if frame is None:
            raise MediaStreamError
        return frame


def encoded(codec: str, n: int, gop: int = 30) -> list[bytes]:
    """`n` frames of 320x240 video encoded with `codec` (Annex B for H.264)."""
    enc = av.CodecContext.create(codec, "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = 320, 240, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 30), Fraction(30)
    enc.options = {"g": str(gop), "bf": "0"} if codec == "libx264" else {"g": str(gop)}
    out: list[bytes] = []
    for i in range(n):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i, enc.time_base
        out += [bytes(p) for p in enc.encode(frame)]
    return out + [bytes(p) for p in enc.encode(None)]


def opus_frames(n: int) -> list[bytes]:
    """`n` 20 ms Opus frames (48 kHz stereo, a quiet hum)."""
    enc = av.CodecContext.create("libopus", "w")
    assert isinstance(enc, AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    out: list[bytes] = []
    for i in range(n + 2):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(bytes((k * 5) % 64 for k in range(960 * 4)))
        frame.sample_rate, frame.pts = 48000, 960 * i
        out += [bytes(p) for p in enc.encode(frame)]
    return out[:n]


def test_keyframes_and_picture_sizes_are_read_from_the_bitstream() -> None:
    vp8 = encoded("libvpx", 3)
    assert [is_keyframe("vp8", f) for f in vp8] == [True, False, False]
    assert frame_size("vp8", vp8[0]) == (320, 240) and frame_size("vp8", vp8[1]) is None
    h264 = encoded("libx264", 3)
    assert [is_keyframe("h264", f) for f in h264] == [True, False, False]
    assert frame_size("h264", h264[0]) == (320, 240)
    assert is_keyframe("opus", b"\x01")


class Harness:
    def __init__(self, path: Path, kinds: list[str]) -> None:
        self.writer = Writer()
        self.firsts = 0
        self.ends = 0
        self.recording = Recording(path, self.writer, self._first, self._end)
        self.receivers = [FakeReceiver() for _ in kinds]
        self.tracks = [FakeTrack(k) for k in kinds]
        for i, (t, r) in enumerate(zip(self.tracks, self.receivers, strict=True)):
            self.recording.add(t, r, str(i))  # type: ignore[arg-type]

    def _first(self) -> None:
        self.firsts += 1

    def _end(self) -> None:
        self.ends += 1

    def put(self, i: int, codec: RTCRtpCodecParameters, data: bytes, ts: int) -> None:
        """What aiortc's receiver does with a reassembled frame."""
        self.receivers[i].queue.put((codec, JitterFrame(data, ts)))


async def test_vp8_and_opus_are_muxed_as_received(tmp_path: Path) -> None:
    path = tmp_path / "u.mkv"
    h = Harness(path, ["video", "audio"])
    await h.recording.start({"0": VP8, "1": OPUS})
    vp8 = encoded("libvpx", 60)
    opus = opus_frames(100)
    h.put(0, VP8, vp8[1], 0)  # a delta frame first: dropped, a keyframe asked for
    await asyncio.sleep(0)
    assert h.receivers[0].plis == [1234]
    for i, frame in enumerate(vp8[:60]):
        h.put(0, VP8, frame, 3000 * (i + 1))
        for j in range(5 * i // 3, 5 * (i + 1) // 3):
            h.put(1, OPUS, opus[j], 960 * j)
        await asyncio.sleep(1 / 30 / 4)
    assert h.firsts == 1 and h.recording.frames() == {"video": 60, "audio": 100}
    # Written as it goes: readable before the file is finished.
    seconds = await asyncio.to_thread(probe_duration, path)
    assert seconds is not None and seconds > 0.5  # all but the last cluster
    await h.recording.stop()
    await asyncio.to_thread(h.writer.close)
    with av.open(str(path)) as f:
        assert [s.codec_context.name for s in f.streams] == ["vp8", "opus"]
        assert f.streams.video[0].codec_context.width == 320
        assert (f.streams.audio[0].codec_context.extradata or b"")[:8] == b"OpusHead"
        video = [p for p in f.demux(video=0) if p.size]
    assert len(video) == 60 and video[0].is_keyframe
    assert [bytes(p) for p in video] == vp8[:60]  # the very bytes received
    with av.open(str(path)) as f:
        assert sum(1 for _ in f.decode(video=0)) == 60
    with av.open(str(path)) as f:
        assert sum(1 for _ in f.decode(audio=0)) == 100
    duration = await asyncio.to_thread(probe_duration, path)
    assert duration is not None and 1.9 < duration < 2.3


async def test_h264_is_muxed_as_received(tmp_path: Path) -> None:
    path = tmp_path / "u.mkv"
    h = Harness(path, ["video"])
    await h.recording.start({"0": H264})
    frames = encoded("libx264", 30)
    for i, frame in enumerate(frames):
        h.put(0, H264, frame, 3000 * i)
    await h.recording.stop()
    await asyncio.to_thread(h.writer.close)
    with av.open(str(path)) as f:
        assert f.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in f.decode(video=0)) == 30


async def test_a_codec_matroska_cannot_hold_goes_to_the_decoder(tmp_path: Path) -> None:
    h = Harness(tmp_path / "u.mkv", ["video", "audio"])
    await h.recording.start({"0": VP8, "1": PCMU})
    h.put(1, PCMU, b"\xff" * 160, 0)
    assert h.receivers[1].queue.get_nowait()[0] is PCMU  # for aiortc's decoder thread
    h.put(0, VP8, encoded("libvpx", 1)[0], 0)
    assert h.receivers[0].queue.empty()  # taken as it is
    # The end of a track still reaches the decoder thread (which ends the track).
    h.receivers[0].queue.put(None)
    assert h.receivers[0].queue.get_nowait() is None
    await h.tracks[0].frames.put(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert h.ends == 1
    # Decoded audio is encoded to Opus in the writer thread.
    frame = av.AudioFrame(format="s16", layout="mono", samples=160)
    frame.planes[0].update(bytes(320))
    frame.sample_rate = 8000
    for _ in range(50):
        await h.tracks[1].frames.put(frame)
    await asyncio.sleep(0.1)
    await h.recording.stop()
    await asyncio.to_thread(h.writer.close)
    with av.open(str(tmp_path / "u.mkv")) as f:
        assert sum(1 for _ in f.decode(audio=0)) >= 40


async def test_aiortcs_receiver_is_as_the_passthrough_expects() -> None:
    """The receiver's decoder queue (taken over per receiver) and its sockets
    (given room for bursts): internals of the aiortc this runs with."""
    pc = RTCPeerConnection()
    try:
        pc.addTrack(VideoStreamTrack())
        assert isinstance(getattr(pc.getTransceivers()[0].receiver, QUEUE_ATTR), queue.Queue)
        await pc.setLocalDescription(await pc.createOffer())
        assert roomier_sockets(pc) >= 1
    finally:
        await pc.close()


async def test_frames_lost_on_the_way_ask_for_a_keyframe(tmp_path: Path) -> None:
    h = Harness(tmp_path / "u.mkv", ["video"])
    await h.recording.start({"0": VP8})
    vp8 = encoded("libvpx", 4)
    for i in range(3):
        h.put(0, VP8, vp8[i], 3000 * i)
    await asyncio.sleep(0)
    assert h.receivers[0].plis == []  # it began with a keyframe
    h.put(0, VP8, vp8[3], 6000 + 90000)  # a second of frames missing
    await asyncio.sleep(0)
    assert h.receivers[0].plis == [1234]
    await h.recording.stop()
    await asyncio.to_thread(h.writer.close)
    assert h.recording.frames() == {"video": 4}

"""What the media benchmarks share: a moving picture that encoders must
work on, and the CPU seconds a process has used (from /proc)."""

from __future__ import annotations

import os
from pathlib import Path

from aiortc.mediastreams import VideoStreamTrack
from av import VideoFrame

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class MovingPicture(VideoStreamTrack):
    """Frames of a given size with a diagonal pattern that moves every frame,
    so encoders and decoders do real work (a still picture costs nearly
    nothing)."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.width, self.height = width, height
        row = bytes((x * 3) % 256 for x in range(width + height * 2))
        self.luma = b"".join(row[(y * 2) % (height * 2) :][:width] for y in range(height))
        self.sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = self.draw()
        frame.pts, frame.time_base = pts, time_base
        return frame

    def draw(self) -> VideoFrame:
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        shift = (self.sent * 4) % len(self.luma)
        y = frame.planes[0]
        moved = self.luma[shift:] + self.luma[:shift]
        if y.line_size == self.width:
            y.update(moved)
        else:  # padded rows
            pad = b"\x00" * (y.line_size - self.width)
            y.update(
                b"".join(
                    moved[r * self.width : (r + 1) * self.width] + pad for r in range(self.height)
                )
            )
        for plane in frame.planes[1:]:
            plane.update(b"\x80" * plane.buffer_size)
        self.sent += 1
        return frame

"""aiortc peers for the tests: a party that calls the other party peer to peer
and sends the same synthetic camera and microphone to the server's recorder,
all through the server's signaling; a session brought into such a call; and
how long a recorded file plays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from enf_client import EnfClient

from tests.flows import assigned_session, join_both
from tests.served import Served


class Party:
    def __init__(self, client: EnfClient, session_id: str) -> None:
        self.client = client
        self.sid = session_id
        self.to_peer: RTCPeerConnection | None = None
        self.to_recorder: RTCPeerConnection | None = None
        self.received: list[str] = []  # kinds of tracks received from the other party
        self.recording_since: float | None = None
        self._state_changed = asyncio.Event()

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection()

        @pc.on("connectionstatechange")
        def changed() -> None:
            self._state_changed.set()

        return pc

    def _tracks(self, pc: RTCPeerConnection) -> None:
        pc.addTrack(VideoStreamTrack())
        pc.addTrack(AudioStreamTrack())

    async def call_recorder(self) -> None:
        pc = self.to_recorder = self._new_pc()
        self._tracks(pc)
        await self._offer(pc, "recorder")
        self.recording_since = time.monotonic()

    async def call(self, other_id: str) -> None:
        pc = self.to_peer = self._new_pc()
        self._watch(pc)
        self._tracks(pc)
        await self._offer(pc, other_id)

    async def _offer(self, pc: RTCPeerConnection, to: str) -> None:
        """Offer `pc` to `to` (a party or the recorder), apply its answer."""
        await pc.setLocalDescription(await pc.createOffer())
        await self._signal(to, "offer", pc)
        answer = await self.client.expect("signal", timeout=20, **{"from": to})
        await pc.setRemoteDescription(RTCSessionDescription(answer["data"]["sdp"], "answer"))

    async def _signal(self, to: str, kind: str, pc: RTCPeerConnection) -> None:
        """Send `pc`'s local description to `to` through the server."""
        await self.client.call(
            "signal",
            {"session_id": self.sid, "to": to, "kind": kind, "sdp": pc.localDescription.sdp},
        )

    async def answer(self, other_id: str) -> None:
        offer = await self.client.expect("signal", timeout=20, **{"from": other_id})
        pc = self.to_peer = self._new_pc()
        self._watch(pc)
        self._tracks(pc)
        await pc.setRemoteDescription(RTCSessionDescription(offer["data"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._signal(other_id, "answer", pc)

    def _watch(self, pc: RTCPeerConnection) -> None:
        @pc.on("track")
        def on_track(track: Any) -> None:
            self.received.append(track.kind)

    async def connected(self, timeout: float = 20) -> None:
        """Both connections up (ICE and DTLS done)."""
        async with asyncio.timeout(timeout):
            while not all(
                pc is not None and pc.connectionState == "connected"
                for pc in (self.to_peer, self.to_recorder)
            ):
                self._state_changed.clear()
                await self._state_changed.wait()

    async def close(self) -> None:
        for pc in (self.to_peer, self.to_recorder):
            if pc is not None:
                await pc.close()


async def video_session(h: Served) -> tuple[EnfClient, EnfClient, str, Party, Party]:
    """An assigned session in video with the recorder on: the parties call
    each other and the recorder, and are connected. (customer, notary,
    session id, the customer's party, the notary's party.)"""
    customer, notary, sid = await assigned_session(h)
    await join_both(customer, notary, sid)
    started = await notary.call("video.start", {"session_id": sid})
    assert started["provider"] == "webrtc" and started["recorder"] is True
    # Both parties are told the recorder is on: the customer by an event.
    config = (await customer.expect("video.config"))["data"]
    assert config == {"provider": "webrtc", "ice_servers": [], "recorder": True}
    state = await customer.expect("session.state", state="VIDEO_IN_PROGRESS")
    assert state["data"]["recorder"] is True
    c, n = Party(customer, sid), Party(notary, sid)
    await asyncio.gather(c.call("n1"), n.answer("c1"))
    await asyncio.gather(c.call_recorder(), n.call_recorder())
    await asyncio.gather(c.connected(), n.connected())
    return customer, notary, sid, c, n


@asynccontextmanager
async def parties_closed(*parties: Party) -> AsyncIterator[None]:
    """The parties' connections are closed on the way out, whatever happened."""
    try:
        yield
    finally:
        for p in parties:
            await p.close()


async def record_then_end(
    customer: EnfClient,
    notary: EnfClient,
    sid: str,
    seconds: float,
    *,
    timeout: float = 20,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The recorder receives both parties (the customer is told); `meanwhile()`,
    if given; `seconds` more of the call; then the notary ends it."""
    await recording_both(customer, timeout=timeout)
    if meanwhile is not None:
        await meanwhile()
    await asyncio.sleep(seconds)
    await notary.call("video.end", {"session_id": sid})


async def recording_both(client: EnfClient, timeout: float = 20) -> None:
    """Until `recording.started` for each party (c1 and n1): the act may go on
    in full view with ENF_RECORDING=required (PROTOCOL §5)."""
    for uid in ("c1", "n1"):
        await client.expect("recording.started", user_id=uid, timeout=timeout)


def media_seconds(path: Path) -> float:
    """How long the recorded file at `path` plays (audio and video in it)."""
    with av.open(str(path)) as f:
        streams = {s.type for s in f.streams}
        assert {"audio", "video"} <= streams, streams
        last = 0.0
        try:
            for packet in f.demux():
                if packet.pts is not None and packet.stream.time_base is not None:
                    last = max(last, float(packet.pts * packet.stream.time_base))
        except av.error.EOFError:
            pass  # cut short (a killed recorder): readable up to there
        start = min(
            float(s.start_time * s.time_base)
            for s in f.streams
            if s.start_time is not None and s.time_base is not None
        )
        return last - start

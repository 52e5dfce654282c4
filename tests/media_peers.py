"""aiortc peers for the tests: a party that calls the other party peer to peer
and sends the same synthetic camera and microphone to the server's recorder,
all through the server's signaling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from gateway.client import EnfClient


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
        await pc.setLocalDescription(await pc.createOffer())
        await self.client.call(
            "signal",
            {
                "session_id": self.sid,
                "to": "recorder",
                "kind": "offer",
                "sdp": pc.localDescription.sdp,
            },
        )
        answer = await self.client.expect("signal", timeout=20, **{"from": "recorder"})
        await pc.setRemoteDescription(RTCSessionDescription(answer["data"]["sdp"], "answer"))
        self.recording_since = time.monotonic()

    async def call(self, other_id: str) -> None:
        pc = self.to_peer = self._new_pc()
        self._watch(pc)
        self._tracks(pc)
        await pc.setLocalDescription(await pc.createOffer())
        await self.client.call(
            "signal",
            {
                "session_id": self.sid,
                "to": other_id,
                "kind": "offer",
                "sdp": pc.localDescription.sdp,
            },
        )
        answer = await self.client.expect("signal", timeout=20, **{"from": other_id})
        await pc.setRemoteDescription(RTCSessionDescription(answer["data"]["sdp"], "answer"))

    async def answer(self, other_id: str) -> None:
        offer = await self.client.expect("signal", timeout=20, **{"from": other_id})
        pc = self.to_peer = self._new_pc()
        self._watch(pc)
        self._tracks(pc)
        await pc.setRemoteDescription(RTCSessionDescription(offer["data"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.client.call(
            "signal",
            {
                "session_id": self.sid,
                "to": other_id,
                "kind": "answer",
                "sdp": pc.localDescription.sdp,
            },
        )

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

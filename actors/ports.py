"""What the domain needs from the layers above it, as small interfaces.

The actors reach the recorder, the video provider, the metrics and the
presence leases only through these; media, gateway and cluster implement
them and the composition root (gateway/app.py) wires them in.
"""

from __future__ import annotations

from typing import Any, Protocol


class Recorder(Protocol):
    """The server's recording peer (media.recorder, cluster.rayrecorder)."""

    async def offer(self, session_id: str, user_id: str, sdp: str) -> str: ...

    async def ice(self, session_id: str, user_id: str, candidate: dict[str, Any]) -> None: ...

    def finish(self, session_id: str) -> None: ...


class VideoRooms(Protocol):
    """A hosted video provider (media.twilio_video)."""

    async def create_room(self, session_id: str) -> str: ...

    def token(self, session_id: str, user_id: str) -> str: ...

    async def end_room(self, session_id: str) -> None: ...


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class DomainMetrics(Protocol):
    """The figures the actors report (gateway.metrics.Metrics)."""

    @property
    def recorder_failures(self) -> Counter: ...

    @property
    def match_seconds(self) -> Histogram: ...

    @property
    def offers_refused_by_session(self) -> Counter: ...


class Presence(Protocol):
    """Presence leases across gateways (cluster.leases), cluster mode only."""

    @property
    def lease_s(self) -> float: ...

    async def alive(self, notary_id: str) -> set[str] | None: ...

    async def online_notaries(self) -> list[str]: ...

"""The actor API: what an actor is, what it may use, and how hosts reach it.

An actor is addressed by id (`session:<uuid>`, `notary:<id>`, `matchmaker`);
the shard that hosts it is a pure function of the id and the shard count
(`core.ids.shard_of`). An actor is activated on its first message
(`on_activate` loads its state) and passivated when idle (`on_passivate`
snapshots it). Messages are handled one at a time in arrival order; an error
in a handler fails that message only.

`ActorHost` is the interface the gateway and the actors use; `LocalHost`
(actors.localhost) keeps the shards in this process and the Ray host
(cluster.rayhost) spreads them over a cluster. The machinery that runs an
actor (mailbox, run loop, shards) is in actors.cell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from actors.bus import TopicBus
from actors.ports import DomainMetrics, Presence, Recorder, VideoRooms
from config.settings import Settings
from core.errors import ProtocolError
from core.messages import Message
from persistence.journal import Journal
from persistence.keys import Keys

if TYPE_CHECKING:
    import asyncpg

ASK_TIMEOUT_S = 30.0


class Mailbox(Protocol):
    """Where an actor's timers post their messages (its cell, actors.cell)."""

    @property
    def stopped(self) -> bool: ...

    def tell(self, msg: Message) -> None: ...


class Messenger(Protocol):
    """What reaches actors: ask and tell by address."""

    async def ask(self, actor_id: str, msg: Message, timeout: float = ASK_TIMEOUT_S) -> Any:
        """Deliver `msg` and return the handler's result, or raise its ProtocolError."""

    def tell(self, actor_id: str, msg: Message) -> None:
        """Deliver `msg` without waiting; errors are logged by the actor."""


class ActorHost(Messenger, Protocol):
    """A host of actors (actors.localhost, cluster.rayhost), as the gateway sees it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def actor_count(self) -> int:
        """Actors hosted now (in cluster mode: as of the last look at the shards)."""
        ...

    def mailbox_depths(self) -> list[int]:
        """Messages waiting per actor hosted in this process."""
        ...

    def shard_figures(self) -> dict[int, dict[str, Any]]:
        """Cluster mode: each shard's figures (actors, mailboxes, journal) as
        of the last look at the shards, by shard; {} when the actors are here."""
        ...

    async def health(self) -> str:
        """ "ok", or why the actors cannot be reached."""
        ...


class ActorContext:
    """What an actor may use: the host (to reach other actors), the journal,
    the bus, the settings, the keys, and the ports to the layers above
    (recorder, video rooms, metrics, presence leases), each None where this
    process has none."""

    def __init__(
        self,
        host: Messenger,
        journal: Journal,
        bus: TopicBus,
        settings: Settings,
        keys: Keys,
        media: Recorder | None = None,
        video: VideoRooms | None = None,
        metrics: DomainMetrics | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.host = host
        # The recorder when this node records, and hosted video rooms when a
        # provider carries the calls.
        self.media = media
        self.video = video
        self.metrics = metrics
        # Presence leases in Redis, cluster mode only.
        self.presence = presence
        self.journal = journal
        self.bus = bus
        self.settings = settings
        self.keys = keys

    @property
    def pool(self) -> asyncpg.Pool:
        return self.journal.pool


class Actor:
    """Base class. Subclasses implement `on_<kind>` handlers.

    Hooks run inside the actor's own run loop:
    - `on_activate()` before the first message; if it raises, every waiting
      message fails with `unavailable` and the next message tries again.
    - `on_passivate()` before the actor is dropped from memory; errors are logged.
    """

    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        self.actor_id = actor_id
        self.ctx = ctx
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._cell: Mailbox | None = None

    async def on_activate(self) -> None:
        return None

    async def on_passivate(self) -> None:
        return None

    def is_idle(self) -> bool:
        """May the runtime passivate this actor now? (No timers armed by default.)"""
        return not self._timers

    def disposable(self) -> bool:
        """May the runtime drop this actor as soon as its mailbox is empty?
        (One that holds nothing: asked about something that does not exist.)"""
        return False

    async def receive(self, msg: Message) -> Any:
        if not msg.kind or msg.kind.startswith("_"):
            raise ProtocolError("bad_request", f"unknown message {msg.kind!r}")
        handler = getattr(self, "on_" + msg.kind.replace(".", "_"), None)
        if handler is None:
            raise ProtocolError("bad_request", f"unknown message {msg.kind!r}")
        return await handler(msg)

    # -- timers: a message to self after a delay ----------------------------

    def set_timer(self, name: str, delay: float, msg: Message) -> None:
        self.cancel_timer(name)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(name, None)
            if self._cell is not None and not self._cell.stopped:
                self._cell.tell(msg)

        self._timers[name] = loop.call_later(max(0.0, delay), fire)

    def cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_all_timers(self) -> None:
        for name in list(self._timers):
            self.cancel_timer(name)


ActorFactory = Callable[[str, ActorContext], Actor]

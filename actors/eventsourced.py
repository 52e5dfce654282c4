"""Event-sourced actors: the one place an actor's durable state changes.

`commit()` validates nothing itself — handlers decide — but it is the only
path from a decision to a state change: it numbers and hash-chains the
events, applies them to a copy of the state, journals them together with the
projections computed from that copy, and only once the database has
committed does it swap the state in and publish the events.

The state is JSON-shaped (snapshots hold it as JSON); `EventSourced` is
generic over its type (a TypedDict, say), and `EventSourcedActor` is the
one whose state is a plain dict, empty at first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgpack

from actors.actor import Actor, ActorContext
from core.clock import now_iso
from core.messages import Caller, Delivery, Message, Reply
from persistence.journal import (
    GENESIS_HASH,
    Append,
    IdempotencyRecord,
    StoredEvent,
    canonical_json,
)
from persistence.projections import Projection

logger = logging.getLogger(__name__)

S = TypeVar("S")


def request_fingerprint(kind: str, data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json([kind, data]).encode()).hexdigest()[:32]


def copy_state(state: S) -> S:
    """A deep copy of JSON-shaped state (what snapshots hold), a few times
    faster than `copy.deepcopy`."""
    copied: S = msgpack.unpackb(msgpack.packb(state))
    return copied


class EventSourced(Actor, Generic[S]):
    """Subclasses define `initial_state()`, `apply(state, event)` and may add
    `projections(state, events)` (rows committed with the events)."""

    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.state: S = self.initial_state()
        self.seq = 0
        self.head_hash = GENESIS_HASH
        self._replies: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._since_snapshot = 0

    # -- to override -------------------------------------------------------

    def initial_state(self) -> S:
        raise NotImplementedError

    def apply(self, state: S, event: StoredEvent) -> None:
        """Fold one event into `state` (mutating it). Pure: no I/O, no clock."""
        raise NotImplementedError

    def projections(self, state: S, events: Sequence[StoredEvent]) -> list[Projection]:
        return []

    def copy_for_commit(self, state: S) -> S:
        """A copy of `state` that `apply` may change while `state` stays as
        it is (a commit that fails leaves the actor's state untouched). Deep
        by default; an actor whose fold changes only known parts in place
        may copy just those."""
        return copy_state(state)

    def disposable(self) -> bool:
        """Nothing journaled and nothing held in memory: a lookup of an id that
        does not exist does not keep an actor (and its memory) for
        ENF_PASSIVATE_AFTER_S."""
        return self.seq == 0 and self.is_idle()

    # -- lifecycle ---------------------------------------------------------

    async def on_activate(self) -> None:
        loaded = await self.ctx.journal.load(self.actor_id)
        if loaded.snapshot is not None:
            seq, body = loaded.snapshot
            self.state, self.seq, self.head_hash = body["state"], seq, body["head_hash"]
        for event in loaded.events:
            self.apply(self.state, event)
            self.seq, self.head_hash = event.seq, event.hash
        for r in loaded.idempotency:
            self._replies[(r.user_id, r.request_id)] = (r.fingerprint, r.reply)
        if self.seq:
            logger.debug("activated %s at seq %d", self.actor_id, self.seq)

    async def on_passivate(self) -> None:
        if self.seq and self._since_snapshot:
            await self.ctx.journal.append(Append(self.actor_id, snapshot=self._snapshot()))

    def _snapshot(self) -> tuple[int, dict[str, Any]]:
        return self.seq, {"state": self.state, "head_hash": self.head_hash}

    # -- idempotent requests ------------------------------------------------

    # Requests whose handler is idempotent by itself (and must see repeats).
    SELF_IDEMPOTENT: frozenset[str] = frozenset()

    async def receive(self, msg: Message) -> Any:
        """A client request already applied (a retry after a reconnect or a
        crash) gets its first reply again instead of being applied twice."""
        if msg.kind not in self.SELF_IDEMPOTENT:
            replayed = self.replay_reply(msg.caller, msg.kind, msg.data)
            if replayed is not None:
                logger.info(
                    "%s: replaying the reply to %s %s",
                    self.actor_id,
                    msg.kind,
                    msg.caller.request_id if msg.caller else "",
                )
                return replayed
        return await super().receive(msg)

    def replay_reply(self, caller: Caller | None, kind: str, data: dict[str, Any]) -> Reply | None:
        """The reply already given to this very request (same user, id, type
        and data), if it changed state before; a retry gets it again."""
        if caller is None or not caller.request_id:
            return None
        seen = self._replies.get((caller.user_id, caller.request_id))
        if seen and seen[0] == request_fingerprint(kind, data):
            return Reply(seen[1]["data"], follow=dict(seen[1].get("follow") or {}))
        return None

    # -- the one state-changing path ---------------------------------------

    async def commit(
        self,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        caller: Caller | None = None,
        request: tuple[str, dict[str, Any]] | None = None,
        reply: Reply | None = None,
        rows: Sequence[Projection] = (),
        statements: Sequence[tuple[str, tuple[Any, ...]]] = (),
    ) -> list[StoredEvent]:
        """Journal `events` (and the reply of `request`, for retries), with
        `rows` of batched tables besides the actor's own projections and
        `statements` of their own (which put the batch in a transaction
        around them: rows are cheaper); then apply and publish them. Raises
        Unavailable/StaleActivation with the state untouched."""
        record = {"data": reply.data if reply else {}, "follow": reply.follow if reply else {}}
        new_state = self.copy_for_commit(self.state)
        stored: list[StoredEvent] = []
        seq, head = self.seq, self.head_hash
        at = now_iso()
        for name, data in events:
            seq += 1
            event = StoredEvent.make(self.actor_id, seq, name, data, at, head)
            self.apply(new_state, event)
            stored.append(event)
            head = event.hash
        idem: list[IdempotencyRecord] = []
        if caller is not None and request is not None and caller.request_id:
            idem.append(
                IdempotencyRecord(
                    caller.user_id, caller.request_id, request_fingerprint(*request), record
                )
            )
        since = self._since_snapshot + len(stored)
        snapshot = None
        if stored and since >= self.ctx.settings.snapshot_every:
            snapshot = (seq, {"state": new_state, "head_hash": head})
        await self.ctx.journal.append(
            Append(
                self.actor_id,
                events=stored,
                projections=[*self.projections(new_state, stored), *rows],
                statements=statements,
                idempotency=idem,
                snapshot=snapshot,
            )
        )
        self.state, self.seq, self.head_hash = new_state, seq, head
        self._since_snapshot = 0 if snapshot else since
        for r in idem:
            self._replies[(r.user_id, r.request_id)] = (r.fingerprint, r.reply)
        for event in stored:
            self.ctx.bus.publish(Delivery(self.actor_id, event.wire(), event.seq))
        return stored

    def publish_ephemeral(
        self, topic: str, name: str, data: dict[str, Any], to_user: str | None = None
    ) -> None:
        event = {"type": "event", "topic": topic, "name": name, "data": data, "at": now_iso()}
        self.ctx.bus.publish(Delivery(topic, event, None, to_user))


class EventSourcedActor(EventSourced[dict[str, Any]]):
    """An event-sourced actor whose state is a plain dict, empty at first."""

    def initial_state(self) -> dict[str, Any]:
        return {}

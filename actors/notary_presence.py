"""The presence half of the NotaryActor (actors.notary): the notary's
connections, `available`/`away`, the reconnect grace, the presence leases of
cluster mode, and the status this adds up to, reported to the Matchmaker and
to presence followers.

The offer half (actors.notary) holds the open offer and the active session
that make a notary busy, and withdraws the offer when the notary goes
offline (`_drop_offer`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime
from typing import Any

from actors.actor import ActorContext
from actors.eventsourced import EventSourcedActor
from core.errors import ProtocolError
from core.ids import MATCHMAKER, PRESENCE_TOPIC
from core.messages import Caller, Message, Reply

logger = logging.getLogger(__name__)


class NotaryPresence(EventSourcedActor):
    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.notary_id = actor_id.split(":", 1)[1]
        self.profile: dict[str, Any] = {}
        self.live_avg: float | None = None
        self.conns: set[str] = set()
        self.online = False
        self.preference = "available"
        self.available_since = 0.0
        self.claim_commission: str | None = None
        self.offer: dict[str, Any] | None = None
        self.active_session: str | None = None
        self._last_status = "offline"

    async def _drop_offer(self, reason: str) -> None:
        """Withdraw the open offer, if any (the offer half does)."""

    # -- presence leases (cluster mode) ----------------------------------------

    async def _restore_from_leases(self) -> None:
        """After a restart of this actor's shard: connections that still hold a
        lease are still there, so the notary is still online."""
        presence = self.ctx.presence
        if presence is None or self.online:
            return
        live = await presence.alive(self.notary_id)
        if live:
            logger.info("notary %s still connected (%d leases)", self.notary_id, len(live))
            self.conns |= live
            self.online, self.preference = True, "available"
            self._status_changed()
            self._arm_lease_check()

    def _arm_lease_check(self) -> None:
        if self.ctx.presence is not None and "lease" not in self._timers:
            self.set_timer("lease", self.ctx.presence.lease_s / 2, Message("lease_check"))

    async def on_lease_check(self, msg: Message) -> None:
        """A connection whose lease lapsed is gone (its gateway died): the same
        as a close, so the reconnect grace applies."""
        presence = self.ctx.presence
        if not self.conns or presence is None:
            return
        live = await presence.alive(self.notary_id)
        if live is not None:
            for conn in self.conns - live:
                logger.info("notary %s: lease of connection %s lapsed", self.notary_id, conn)
                await self.on_conn_closed(Message("conn_closed", {"connection_id": conn}))
        if self.conns:
            self._arm_lease_check()

    async def on_announce(self, msg: Message) -> None:
        """From a restarted shard that hosts the Matchmaker: say where we stand."""
        await self._restore_from_leases()
        if self.online:
            self._status_changed()

    # -- status --------------------------------------------------------------

    def status(self) -> str:
        if not self.online:
            return "offline"
        if self.offer is not None or self.active_session is not None:
            return "busy"
        return self.preference

    def commission_ok(self) -> bool:
        today = datetime.now(UTC).date()
        for value in (self.profile.get("commission_expires"), self.claim_commission):
            if value:
                try:
                    if date.fromisoformat(str(value)[:10]) < today:
                        return False
                except ValueError:
                    return False
        return True

    def _status_changed(self) -> None:
        """Tell the Matchmaker and presence followers, when anything moved."""
        status = self.status()
        if status == "available" and self._last_status != "available":
            self.available_since = time.time()
        self.ctx.host.tell(
            MATCHMAKER,
            Message(
                "notary_update",
                {
                    "notary_id": self.notary_id,
                    "status": status,
                    "offerable": status == "available" and self.commission_ok(),
                    "available_since": self.available_since,
                    "profile": self.profile,
                    "live_avg": self.live_avg,
                },
            ),
        )
        if status != self._last_status:
            logger.info("notary %s presence %s -> %s", self.notary_id, self._last_status, status)
            self._last_status = status
            self.publish_ephemeral(
                PRESENCE_TOPIC, "notary.presence", {"notary_id": self.notary_id, "status": status}
            )

    def is_idle(self) -> bool:
        return super().is_idle() and not self.conns and not self.online and self.offer is None

    # -- presence requests -------------------------------------------------------

    async def on_presence_online(self, msg: Message) -> Reply:
        caller = self._self(msg.caller)
        self.claim_commission = caller.claims.get("commission_expires")
        if not self.commission_ok():
            raise ProtocolError("forbidden", "your notarial commission has expired")
        since = msg.data.get("since_seq")
        if since is not None and since > self.seq:
            raise ProtocolError(
                "bad_request", f"since_seq {since} is ahead of your topic (latest seq {self.seq})"
            )
        self.conns.add(caller.connection_id)
        self._arm_lease_check()
        self.cancel_timer("grace")
        if not self.online:
            self.online, self.preference = True, "available"
        self._status_changed()
        return Reply(
            {"status": self.status()},
            follow={self.actor_id: self.seq if since is None else since},
            track=True,
            heads={self.actor_id: self.seq},
        )

    async def on_presence_set(self, msg: Message) -> Reply:
        self._self(msg.caller)
        if not self.online:
            raise ProtocolError("conflict", "go online first (presence.online)")
        self.preference = msg.data["status"]
        self._status_changed()
        return Reply({"status": self.status()})

    async def on_presence_offline(self, msg: Message) -> Reply:
        self._self(msg.caller)
        await self._go_offline("notary_offline")
        return Reply({})

    async def _go_offline(self, reason: str) -> None:
        self.online = False
        self.cancel_timer("grace")
        await self._drop_offer(reason)
        self._status_changed()

    async def on_conn_closed(self, msg: Message) -> None:
        self.conns.discard(msg.data["connection_id"])
        if not self.conns and self.online:
            self.set_timer("grace", self.ctx.settings.reconnect_grace_s, Message("grace_expired"))

    async def on_grace_expired(self, msg: Message) -> None:
        if not self.conns and self.online:
            logger.info("notary %s gone after reconnect grace", self.notary_id)
            await self._go_offline("notary_offline")

    def _self(self, caller: Caller | None) -> Caller:
        if caller is None or caller.user_id != self.notary_id or caller.role != "enp":
            raise ProtocolError("forbidden", "only the notary may do this")
        return caller

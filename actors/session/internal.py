"""Messages from other actors, from timers and from the runtime: `assign`
(from the NotaryActor holding the accepted offer), request expiry, recovery
after a start, connections closing and the reconnect grace, and activation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from actors import lifecycle as L
from actors.session.interruptions import Interruptions
from actors.session.state import Event
from core.clock import parse_iso
from core.errors import ProtocolError
from core.messages import Message
from persistence import offers

# Added to the reconnect grace of parties present when the actor activates
# (a restart is not their drop: PROTOCOL §5 asks no new token for it).
RESTART_ALLOWANCE_S = 10.0


class InternalMessages(Interruptions):
    async def on_assign(self, msg: Message) -> dict[str, Any]:
        """From the NotaryActor that holds the accepted offer."""
        d = msg.data
        if (
            self.exists
            and self.state["state"] != L.REQUESTED
            and (self.state.get("enp_id"), self.state.get("offer_id"))
            == (d["enp_id"], d["offer_id"])
        ):
            # This very assignment, asked again (its answer was lost with a
            # shard or a connection): the same answer, not a refusal.
            return {"session_id": self.session_id, "seq": self.state.get("assigned_seq", self.seq)}
        if not self.exists or self.state["state"] != L.REQUESTED:
            raise ProtocolError("conflict", "the session is no longer waiting for a notary")
        amount = round(float(d.get("tariff") or 0.0), 2)
        platform_fee = round(amount * self.ctx.settings.platform_fee_share, 2)
        stored = await self.commit(
            [
                self._move(
                    L.ENP_ASSIGNED,
                    d["enp_id"],
                    enp_id=d["enp_id"],
                    offer_id=d["offer_id"],
                    amount=amount,
                    platform_fee=platform_fee,
                    enp_fee=round(amount - platform_fee, 2),
                    enp_name=d.get("enp_name"),
                    enp_license=d.get("enp_license"),
                )
            ],
            # The offer is accepted in the same transaction as the assignment:
            # one atomic step, whatever happens to the notary's own commit.
            rows=[offers.resolved(d["offer_id"], "accepted")],
        )
        self._after_move()
        if self.ctx.metrics is not None:
            waited = (datetime.now(UTC) - parse_iso(self.state["created_at"])).total_seconds()
            self.ctx.metrics.match_seconds.observe(max(0.0, waited))
        return {"session_id": self.session_id, "seq": stored[0].seq}

    async def on_request_expired(self, msg: Message) -> None:
        if self.state["state"] != L.REQUESTED:
            return
        if datetime.now(UTC) < parse_iso(self.state["expires_at"]):
            self._arm_ttl()
            return
        await self.commit([self._move(L.CANCELLED, "system", reason="no_notary")])
        self._after_move()

    async def on_recover(self, msg: Message) -> None:
        """Sent at start-up to sessions that need the server to act by itself."""
        st = self.state["state"]
        if st == L.REQUESTED:
            self._arm_ttl()
            self._enqueue_for_matching()
        elif st == L.NOTARIZING:
            self.set_timer("finalize", 0, Message("finalize"))
        elif st == L.DISTRIBUTING:
            await self._sync_deliveries()
        elif (
            st == L.VIDEO_COMPLETED
            and self.ctx.media is not None
            and not self.state.get("recording")
            and not self.state.get("recording_failed")
        ):
            # Ended while the server went down: finalise what was recorded.
            self.ctx.media.finish(self.session_id)

    async def on_conn_closed(self, msg: Message) -> None:
        uid, conn = msg.data["user_id"], msg.data["connection_id"]
        conns = self.conns.get(uid)
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self.conns[uid]
            p = self.state["participants"].get(uid)
            if p and p["present"] and self.state["state"] not in L.TERMINAL:
                self._start_grace(uid)

    async def on_conn_alive(self, msg: Message) -> None:
        """From a gateway, after this actor's shard restarted: a connection
        that tracked it is still open (its socket never dropped)."""
        d = msg.data
        uid = d["user_id"]
        p = self.state["participants"].get(uid)
        if p is None or p["role"] != d.get("role") or not p["present"]:
            return  # not a participant, or gone from the session: it re-joins
        if self.state["state"] in L.TERMINAL:
            return
        self.conns.setdefault(uid, set()).add(d["connection_id"])
        self.cancel_timer(f"grace:{uid}")
        await self._maybe_resume()

    def _start_grace(self, uid: str, extra_s: float = 0.0) -> None:
        self.set_timer(
            f"grace:{uid}",
            self.ctx.settings.reconnect_grace_s + extra_s,
            Message("grace_expired", {"user_id": uid}),
        )

    async def on_grace_expired(self, msg: Message) -> None:
        uid = msg.data["user_id"]
        p = self.state["participants"].get(uid)
        if self.conns.get(uid) or not p or not p["present"]:
            return
        if self.state["state"] in L.TERMINAL:
            return  # ended during the grace: a finished session's journal is closed
        # Away past the grace during the call: the act pauses (PROTOCOL §5).
        events: list[Event] = [
            ("participant.left", {"user_id": uid, "role": p["role"]}),
            *self._pause("party_left", uid),
        ]
        await self._commit_with_pause(events)

    async def on_activate(self) -> None:
        await super().on_activate()
        if self.state["state"] == L.DISTRIBUTING:
            self.set_timer("deliveries", 0, Message("sync_deliveries"))
        for uid, p in self.state["participants"].items():
            if p["present"] and self.state["state"] not in L.TERMINAL:
                # Nobody knows yet who is connected: after a restart, clients
                # reconnect (single node) or their gateway says they never
                # left (a shard of a cluster, within its 5 s look at the shards).
                self._start_grace(uid, RESTART_ALLOWANCE_S)
        if self.exists:
            self._arm_timers()

"""NotaryActor: the truth about one notary (ARCHITECTURE.md, Presence and matching).

It holds the notary's presence (its connections, `available`/`away`, the
reconnect grace), the one offer and the one active session it may have, and
its live response-time average. Its journal is the `notary:<id>` topic
(`offer`, `offer.expired`, `offer.withdrawn`); which offer is open and which
session is active are read back from the `offers` and `sessions` projections,
whose source of truth is the session journal.

Who asks whom: the Matchmaker asks this actor (hold/expire/withdraw an
offer); this actor asks the SessionActor (assign). Everything sent the other
way is a `tell`, so no two actors can wait on each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from actors import lifecycle as L
from actors.actor import ActorContext
from actors.eventsourced import EventSourcedActor
from actors.scoring import update_ema
from core.clock import iso, parse_iso
from core.errors import ProtocolError
from core.ids import MATCHMAKER, session_address
from core.messages import Caller, Message, Reply
from persistence.journal import StoredEvent
from persistence.outbox import sms_message
from persistence.projections import Projection

logger = logging.getLogger(__name__)

_OFFER_SQL = (
    "UPDATE offers SET state = $2, resolved_at = now() WHERE offer_id = $1 AND state = 'open'"
)
_AVG_SQL = (
    "INSERT INTO notaries (notary_id, profile, live_avg_response_s) VALUES ($1, '{}', $2)"
    " ON CONFLICT (notary_id) DO UPDATE SET live_avg_response_s = $2"
)


class NotaryActor(EventSourcedActor):
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
        self.offered_at = 0.0
        self.active_session: str | None = None
        self.accepted: dict[str, str] = {}  # offer_id -> session_id, for retried accepts
        self._last_status = "offline"

    def apply(self, state: dict[str, Any], event: StoredEvent) -> None:
        return None  # the topic's events carry no state the actor folds; see module doc

    def projections(self, state: dict[str, Any], events: Sequence[StoredEvent]) -> list[Projection]:
        """An offer made while the notary is not connected (its reconnect
        grace) goes out by SMS too, if the notary opted in (`notify_sms`)."""
        phone = self.profile.get("notify_sms")
        if not phone or self.conns or not self.ctx.settings.outbox:
            return []
        return [
            sms_message(
                self.actor_id,
                None,
                e.data["offer_id"],
                phone,
                f"New notarization request ({e.data.get('document_type') or 'document'}):"
                f" open ENF to accept before {e.data['expires_at'][11:19]} UTC.",
                None,
                context=self.actor_id,
            )
            for e in events
            if e.name == "offer"
        ]

    # -- activation -------------------------------------------------------------

    async def on_activate(self) -> None:
        await super().on_activate()
        pool = self.ctx.pool
        await self._load_profile()
        active = await pool.fetch(
            "SELECT session_id, snapshot FROM sessions WHERE enp_id = $1 AND NOT state = ANY($2)",
            self.notary_id,
            list(L.RELEASES_NOTARY),
        )
        if active:
            self.active_session = active[0]["session_id"]
        for row in await pool.fetch(
            "SELECT offer_id, session_id, expires_at, created_at FROM offers"
            " WHERE notary_id = $1 AND state = 'open'",
            self.notary_id,
        ):
            await self._reconcile_open_offer(dict(row))
        await self._restore_from_leases()

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

    async def _load_profile(self) -> None:
        row = await self.ctx.pool.fetchrow(
            "SELECT profile, live_avg_response_s FROM notaries WHERE notary_id = $1", self.notary_id
        )
        if row is not None:
            self.profile = row["profile"] or {}
            self.live_avg = row["live_avg_response_s"]

    async def _reconcile_open_offer(self, row: dict[str, Any]) -> None:
        """An offer left open by a crash: still open, or already taken by its session?"""
        session_id = row["session_id"]
        if self.active_session == session_id:
            self.accepted[row["offer_id"]] = session_id
            await self.commit([], statements=[(_OFFER_SQL, (row["offer_id"], "accepted"))])
            return
        state = await self.ctx.pool.fetchval(
            "SELECT state FROM sessions WHERE session_id = $1", session_id
        )
        if state != L.REQUESTED or self.active_session is not None:
            await self._close_offer_row(
                row["offer_id"], session_id, "offer.withdrawn", "withdrawn", "session_closed"
            )
            return
        self.offer = {
            "offer_id": row["offer_id"],
            "session_id": session_id,
            "expires_at": iso(row["expires_at"]),
        }
        elapsed = (datetime.now(UTC) - row["created_at"]).total_seconds()
        self.offered_at = time.monotonic() - max(0.0, elapsed)

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
                "presence", "notary.presence", {"notary_id": self.notary_id, "status": status}
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
        if self.offer is not None:
            offer = self.offer
            await self._close_offer_row(
                offer["offer_id"], offer["session_id"], "offer.withdrawn", "withdrawn", reason
            )
            self._offer_resolved(offer, "withdrawn")
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

    # -- offers ------------------------------------------------------------------

    async def on_hold_offer(self, msg: Message) -> dict[str, Any]:
        """From the Matchmaker: take this offer if free to."""
        d = msg.data
        if self.status() != "available" or not self.commission_ok():
            return {"ok": False, "status": self.status()}
        offer = {
            "offer_id": d["offer_id"],
            "session_id": d["session_id"],
            "document_type": d.get("document_type"),
            "amount": self.profile.get("tariff"),
            "expires_at": d["expires_at"],
        }
        await self.commit(
            [("offer", offer)],
            statements=[
                (
                    "INSERT INTO offers (offer_id, session_id, notary_id, state, created_at,"
                    " expires_at) VALUES ($1, $2, $3, 'open', now(), $4)",
                    (d["offer_id"], d["session_id"], self.notary_id, parse_iso(d["expires_at"])),
                )
            ],
        )
        self.offer, self.offered_at = offer, time.monotonic()
        self._status_changed()
        return {"ok": True}

    def _holds(self, offer_id: str) -> dict[str, Any]:
        if self.offer is None or self.offer["offer_id"] != offer_id:
            raise ProtocolError("conflict", "this offer is no longer open")
        return self.offer

    async def on_offer_accept(self, msg: Message) -> Reply:
        caller = self._self(msg.caller)
        offer_id = msg.data["offer_id"]
        if offer_id in self.accepted and self.accepted[offer_id] == self.active_session:
            # Accepted before a crash that lost the reply and its record.
            return Reply(
                {"session_id": self.active_session},
                follow={session_address(self.active_session): 0},
            )
        offer = self._holds(offer_id)
        if datetime.now(UTC) >= parse_iso(offer["expires_at"]):
            await self._expire(offer)
            raise ProtocolError("conflict", "this offer has expired")
        session_id = offer["session_id"]
        try:
            assigned = await self.ctx.host.ask(
                session_address(session_id),
                Message(
                    "assign",
                    {
                        "enp_id": self.notary_id,
                        "offer_id": offer_id,
                        "tariff": self.profile.get("tariff") or 0.0,
                        # For the notarial book and the envelope (public: an
                        # ENP's name and commission are on the public roll).
                        "enp_name": self.profile.get("name") or caller.claims.get("name"),
                        "enp_license": self.profile.get("license_number")
                        or caller.claims.get("license_number"),
                    },
                    caller,
                ),
            )
        except ProtocolError as exc:
            if exc.code != "conflict":
                raise
            await self._close_offer_row(
                offer_id, session_id, "offer.withdrawn", "withdrawn", "session_closed"
            )
            self._offer_resolved(offer, "withdrawn")
            self._status_changed()
            raise
        seconds = time.monotonic() - self.offered_at
        avg = update_ema(self._current_avg(), seconds)
        reply = Reply(
            {"session_id": session_id}, follow={session_address(session_id): assigned["seq"] - 1}
        )
        await self.commit(
            [],
            caller=caller,
            request=(msg.kind, msg.data),
            reply=reply,
            statements=[(_OFFER_SQL, (offer_id, "accepted")), (_AVG_SQL, (self.notary_id, avg))],
        )
        self.live_avg = avg
        self.offer, self.active_session = None, session_id
        self.accepted = {offer_id: session_id}
        self._offer_resolved(offer, "accepted")
        self._status_changed()
        return reply

    async def on_offer_decline(self, msg: Message) -> Reply:
        self._self(msg.caller)
        offer = self._holds(msg.data["offer_id"])
        await self._close_offer_row(
            offer["offer_id"], offer["session_id"], "offer.withdrawn", "declined", "declined"
        )
        self._offer_resolved(offer, "declined")
        self._status_changed()
        return Reply({})

    async def on_expire_offer(self, msg: Message) -> dict[str, Any]:
        """From the Matchmaker's timer."""
        if self.offer is None or self.offer["offer_id"] != msg.data["offer_id"]:
            return {"expired": False}
        await self._expire(self.offer)
        return {"expired": True}

    async def _expire(self, offer: dict[str, Any]) -> None:
        avg = update_ema(self._current_avg(), self.ctx.settings.offer_timeout_s)
        await self._close_offer_row(
            offer["offer_id"],
            offer["session_id"],
            "offer.expired",
            "expired",
            None,
            extra=[(_AVG_SQL, (self.notary_id, avg))],
        )
        self.live_avg = avg
        self._offer_resolved(offer, "expired")
        self._status_changed()

    async def on_withdraw_offer(self, msg: Message) -> dict[str, Any]:
        """From the Matchmaker, when the session closed while the offer was open."""
        if self.offer is None or self.offer["offer_id"] != msg.data["offer_id"]:
            return {"withdrawn": False}
        offer = self.offer
        await self._close_offer_row(
            offer["offer_id"],
            offer["session_id"],
            "offer.withdrawn",
            "withdrawn",
            msg.data.get("reason", "session_closed"),
        )
        self.offer = None
        self._status_changed()
        return {"withdrawn": True}

    async def _close_offer_row(
        self,
        offer_id: str,
        session_id: str,
        event: str,
        state: str,
        reason: str | None,
        extra: list[tuple[str, tuple[Any, ...]]] | None = None,
    ) -> None:
        data: dict[str, Any] = {"offer_id": offer_id, "session_id": session_id}
        if reason is not None:
            data["reason"] = reason
        await self.commit(
            [(event, data)], statements=[(_OFFER_SQL, (offer_id, state)), *(extra or [])]
        )
        if self.offer is not None and self.offer["offer_id"] == offer_id:
            self.offer = None

    def _offer_resolved(self, offer: dict[str, Any], outcome: str) -> None:
        self.ctx.host.tell(
            MATCHMAKER,
            Message(
                "offer_resolved",
                {
                    "offer_id": offer["offer_id"],
                    "session_id": offer["session_id"],
                    "notary_id": self.notary_id,
                    "outcome": outcome,
                },
            ),
        )

    def _current_avg(self) -> float:
        if self.live_avg is not None:
            return self.live_avg
        return float(self.profile.get("avg_response_time_s") or 0.0)

    # -- from sessions and admins ------------------------------------------------

    async def on_session_ended(self, msg: Message) -> None:
        if self.active_session == msg.data["session_id"]:
            self.active_session = None
            self.accepted.clear()
            self._status_changed()

    async def on_profile_updated(self, msg: Message) -> None:
        await self._load_profile()
        if self.online:
            self._status_changed()

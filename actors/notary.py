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

This module holds the offer half (the open offer, the active session, the
response-time average); the presence half is actors.notary_presence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from actors import lifecycle as L
from actors.actor import ActorContext
from actors.notary_presence import NotaryPresence
from actors.scoring import update_ema
from core.clock import iso, parse_iso
from core.errors import ProtocolError
from core.ids import MATCHMAKER, session_address
from core.messages import Message, Reply
from persistence import directory, offers, sessions
from persistence.journal import StoredEvent, Unavailable
from persistence.outbox import sms_message
from persistence.projections import Projection

logger = logging.getLogger(__name__)

# Writing an accept's record after the assignment: tries (0.2, 0.4, 0.8 s apart).
ACCEPT_RECORD_TRIES = 3


class NotaryActor(NotaryPresence):
    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.offered_at = 0.0
        self.accepted: dict[str, str] = {}  # offer_id -> session_id, for retried accepts

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
        self.active_session = await sessions.active_session_of(
            pool, self.notary_id, L.RELEASES_NOTARY
        )
        if self.active_session is not None:
            # A retried accept (its reply lost) is answered the same after a restart.
            offer_id = await offers.accepted_offer(pool, self.active_session, self.notary_id)
            if offer_id is not None:
                self.accepted[offer_id] = self.active_session
        for row in await offers.open_offers_of(pool, self.notary_id):
            await self._reconcile_open_offer(row)
        await self._restore_from_leases()

    async def _load_profile(self) -> None:
        row = await directory.notary_profile(self.ctx.pool, self.notary_id)
        if row is not None:
            self.profile = row["profile"] or {}
            self.live_avg = row["live_avg_response_s"]

    async def _reconcile_open_offer(self, row: dict[str, Any]) -> None:
        """An offer left open by a crash: still open, or already taken by its session?"""
        session_id = row["session_id"]
        if self.active_session == session_id:
            self.accepted[row["offer_id"]] = session_id
            await self.commit([], rows=[offers.resolved(row["offer_id"], "accepted")])
            return
        state = await sessions.state_of(self.ctx.pool, session_id)
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
            rows=[
                offers.opened(
                    d["offer_id"], d["session_id"], self.notary_id, parse_iso(d["expires_at"])
                )
            ],
        )
        self.offer, self.offered_at = offer, time.monotonic()
        self._status_changed()
        return {"ok": True}

    async def _drop_offer(self, reason: str) -> None:
        if self.offer is not None:
            offer = self.offer
            await self._close_offer_row(
                offer["offer_id"], offer["session_id"], "offer.withdrawn", "withdrawn", reason
            )
            self._offer_resolved(offer, "withdrawn")

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
            await self._refused(offer)
            raise
        # Assigned: the session's commit made the step (the offer row accepted
        # with it). What follows is this notary's bookkeeping, which must not
        # turn a done step into an error for the client.
        reply = Reply(
            {"session_id": session_id}, follow={session_address(session_id): assigned["seq"] - 1}
        )
        self.offer, self.active_session = None, session_id
        self.accepted = {offer_id: session_id}
        self._offer_resolved(offer, "accepted")
        self._status_changed()
        await self._record_accept(msg, reply)
        return reply

    async def _refused(self, offer: dict[str, Any]) -> None:
        """The session refused the offer (it no longer waits for a notary).
        The Matchmaker hears it first, so that it never offers that session
        again even if closing the offer row fails now."""
        self._offer_resolved(offer, "withdrawn", refused=True)
        await self._close_offer_row(
            offer["offer_id"], offer["session_id"], "offer.withdrawn", "withdrawn", "session_closed"
        )
        self._status_changed()

    async def _record_accept(self, msg: Message, reply: Reply) -> None:
        """The accept's reply (for retries by id) and the live response time.
        Tried a few times; if the database stays away, a retry is still
        answered from `accepted`, and activation rebuilds the rest."""
        avg = update_ema(self._current_avg(), time.monotonic() - self.offered_at)
        for attempt in range(ACCEPT_RECORD_TRIES):
            try:
                await self.commit(
                    [],
                    caller=msg.caller,
                    request=(msg.kind, msg.data),
                    reply=reply,
                    rows=[directory.live_avg(self.notary_id, avg)],
                )
            except Unavailable as exc:
                logger.warning(
                    "notary %s: accept recorded late (try %d): %s", self.notary_id, attempt + 1, exc
                )
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            self.live_avg = avg
            return
        # Nothing is lost: the session's commit holds the assignment and the
        # accepted offer; a retry by id is answered from `accepted`.
        logger.warning(
            "notary %s: the accept's record (reply, response time) was not written",
            self.notary_id,
        )

    async def on_offer_decline(self, msg: Message) -> Reply:
        self._self(msg.caller)
        offer = self._holds(msg.data["offer_id"])
        reply = Reply({})
        # The reply is journaled with the decline: a retry by id after a lost
        # reply gets it again, not "no longer open".
        await self._close_offer_row(
            offer["offer_id"],
            offer["session_id"],
            "offer.withdrawn",
            "declined",
            "declined",
            answering=(msg, reply),
        )
        self._offer_resolved(offer, "declined")
        self._status_changed()
        return reply

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
            extra=[directory.live_avg(self.notary_id, avg)],
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
        extra: list[Projection] | None = None,
        answering: tuple[Message, Reply] | None = None,
    ) -> None:
        """`answering`: the client's request and its reply, journaled for retries."""
        data: dict[str, Any] = {"offer_id": offer_id, "session_id": session_id}
        if reason is not None:
            data["reason"] = reason
        msg, reply = answering if answering is not None else (None, None)
        await self.commit(
            [(event, data)],
            caller=msg.caller if msg is not None else None,
            request=(msg.kind, msg.data) if msg is not None else None,
            reply=reply,
            rows=[offers.resolved(offer_id, state), *(extra or [])],
        )
        if self.offer is not None and self.offer["offer_id"] == offer_id:
            self.offer = None

    def _offer_resolved(
        self, offer: dict[str, Any], outcome: str, *, refused: bool = False
    ) -> None:
        """Tell the Matchmaker; `refused`: the session itself refused the offer."""
        data = {
            "offer_id": offer["offer_id"],
            "session_id": offer["session_id"],
            "notary_id": self.notary_id,
            "outcome": outcome,
        }
        if refused:
            data["refused"] = True
        self.ctx.host.tell(MATCHMAKER, Message("offer_resolved", data))

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

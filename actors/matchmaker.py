"""The Matchmaker: the only one that makes offers (one per cluster).

It keeps the index of notaries (from their actors' updates) and the queue of
sessions waiting for one, and offers each waiting session, oldest first, to
its best candidate (shared/MATCHING.md). Its state is rebuilt at start from
the `sessions` and `offers` projections; the invariants themselves are held
by the NotaryActor (one offer, one session) and the SessionActor (one
notary), so a stale view here can cost a retry, never a double assignment.
The notaries, the queue and the offers are kept in actors/match_queue.py so
that an event costs about the available notaries plus a log of the queue.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.actor import Actor, ActorContext
from actors.match_queue import MatchBook, NotaryEntry, Pending
from actors.scoring import Criteria, best, candidate_from_profile, rank
from core.clock import iso
from core.errors import ProtocolError
from core.ids import notary_address
from core.messages import Caller, Message
from persistence import directory, offers, sessions

logger = logging.getLogger(__name__)


def criteria_of(req: dict[str, Any], favorites: frozenset[str]) -> Criteria:
    """What a request (or a `notaries.available` query) asks for."""
    loc = req.get("location")
    price = req.get("price_preference")
    return Criteria(
        document_type=req.get("document_type"),
        price_preference=None if price is None else float(price),
        location=(float(loc["lat"]), float(loc["lng"])) if loc else None,
        favorites=favorites,
    )


class Matchmaker(Actor):
    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.book = MatchBook()
        self._match_queued = False

    def is_idle(self) -> bool:
        return False  # one per cluster, always active

    async def on_activate(self) -> None:
        pool = self.ctx.pool
        book = self.book
        for row in await sessions.waiting_requests(pool):
            await self._add_pending(row["session_id"], row["request"])
        for row in await offers.offers_for(pool, list(book.pending)):
            p = book.pending[row["session_id"]]
            if row["state"] in ("declined", "expired"):
                book.exclude(p, row["notary_id"])
            elif row["state"] == "open":
                book.add_offer(p, row["offer_id"], row["notary_id"])
                remaining = (row["expires_at"] - datetime.now(UTC)).total_seconds()
                self.set_timer(
                    f"offer:{row['offer_id']}",
                    remaining,
                    Message("offer_timeout", {"offer_id": row["offer_id"]}),
                )
        if book.pending:
            logger.info(
                "matchmaker recovered %d waiting sessions, %d open offers",
                len(book.pending),
                len(book.offers),
            )

    async def _add_pending(self, session_id: str, req: dict[str, Any]) -> None:
        if session_id not in self.book.pending:
            self._add(session_id, req, await self._favorites(req.get("customer_id")))

    def _add(self, session_id: str, req: dict[str, Any], favorites: frozenset[str]) -> None:
        if session_id in self.book.pending:
            return
        self.book.add_pending(
            Pending(
                session_id=session_id,
                created_at=req.get("created_at") or "",
                criteria=criteria_of(req, favorites),
                preferred=req.get("preferred_notary_id"),
            )
        )

    async def _favorites(self, customer_id: str | None) -> frozenset[str]:
        if not customer_id:
            return frozenset()
        return frozenset(await directory.favorites_of(self.ctx.pool, customer_id))

    async def _criteria(self, req: dict[str, Any], customer_id: str | None) -> Criteria:
        return criteria_of(req, await self._favorites(customer_id))

    # -- messages --------------------------------------------------------------

    async def on_enqueue(self, msg: Message) -> None:
        session_id = msg.data["session_id"]
        if session_id not in self.book.pending:
            # One read: does it still wait, and the customer's favorites.
            waiting, favorites = await sessions.waiting_with_favorites(
                self.ctx.pool, session_id, msg.data.get("customer_id") or None
            )
            if not waiting:
                # A late enqueue (sent again after a shard restart, say) of a
                # session that has its notary or ended: the session is the truth.
                logger.info("enqueue of %s ignored: it no longer waits", session_id)
                return
            self._add(session_id, msg.data, frozenset(favorites))
        await self._match()

    async def on_session_closed(self, msg: Message) -> None:
        p = self.book.pop_pending(msg.data["session_id"])
        if p is None or p.offer_id is None:
            return
        _session_id, notary_id = self.book.pop_offer(p.offer_id) or (None, "")
        self.cancel_timer(f"offer:{p.offer_id}")
        if notary_id:
            try:
                await self.ctx.host.ask(
                    notary_address(notary_id),
                    Message("withdraw_offer", {"offer_id": p.offer_id, "reason": "session_closed"}),
                )
            except ProtocolError as exc:
                # Let the expiry path clean the offer up instead.
                logger.warning("could not withdraw offer %s: %s", p.offer_id, exc.message)
                self.book.hold(p.offer_id, p.session_id, notary_id)
                self.set_timer(
                    f"offer:{p.offer_id}", 1.0, Message("offer_timeout", {"offer_id": p.offer_id})
                )
        await self._match()

    async def on_session_assigned(self, msg: Message) -> None:
        """From the session: it has its notary. Out of the queue for good (the
        accepting notary's `offer_resolved` says the same, unless it is lost)."""
        self._forget(msg.data["session_id"])

    def _forget(self, session_id: str) -> None:
        p = self.book.pop_pending(session_id)
        if p is not None and p.offer_id is not None:
            self.book.pop_offer(p.offer_id)
            self.cancel_timer(f"offer:{p.offer_id}")

    async def on_notary_update(self, msg: Message) -> None:
        d = msg.data
        nid = d["notary_id"]
        if d["status"] == "offline":
            self.book.drop_notary(nid)
        else:
            profile = d.get("profile") or {}
            self.book.put_notary(
                NotaryEntry(
                    notary_id=nid,
                    status=d["status"],
                    offerable=bool(d["offerable"]),
                    available_since=float(d["available_since"]),
                    candidate=candidate_from_profile(nid, profile, d.get("live_avg")),
                    name=profile.get("name"),
                )
            )
        if d["offerable"]:
            await self._match_now_or_after_the_queue()

    async def _match_now_or_after_the_queue(self) -> None:
        """Match now, or, when more messages already wait in the mailbox (a
        burst of notaries freed at once), once after them: the notaries they
        free are then asked together (`_match`) instead of one commit after
        another."""
        if self._cell is not None and getattr(self._cell, "depth", 0) > 0:
            if not self._match_queued:
                self._match_queued = True
                self._cell.tell(Message("match_queued"))
            return
        await self._match()

    async def on_match_queued(self, msg: Message) -> None:
        self._match_queued = False
        await self._match()

    async def on_offer_resolved(self, msg: Message) -> None:
        d = msg.data
        self.book.pop_offer(d["offer_id"])
        self.cancel_timer(f"offer:{d['offer_id']}")
        if d.get("refused"):
            # The session refused the offer: it no longer waits for a notary
            # (its state is the truth). Never offer it again.
            self._refused(d["session_id"], d["offer_id"])
            await self._match()
            return
        p = self.book.pending.get(d["session_id"])
        if p is not None:
            if d["outcome"] == "accepted":
                self.book.pop_pending(d["session_id"])
            else:
                if d["outcome"] in ("declined", "expired"):
                    self.book.exclude(p, d["notary_id"])
                if p.offer_id == d["offer_id"]:
                    self.book.reopen(p)
        await self._match()

    def _refused(self, session_id: str, offer_id: str) -> None:
        if self.ctx.metrics is not None:
            self.ctx.metrics.offers_refused_by_session.inc()
        logger.warning(
            "session %s refused offer %s: it no longer waits; dropped from the queue",
            session_id,
            offer_id,
        )
        self._forget(session_id)

    async def on_offer_timeout(self, msg: Message) -> None:
        offer_id = msg.data["offer_id"]
        entry = self.book.offers.get(offer_id)
        if entry is None:
            return
        # The notary decides (its mailbox orders this against an accept); it
        # reports the outcome with `offer_resolved`.
        try:
            await self.ctx.host.ask(
                notary_address(entry[1]), Message("expire_offer", {"offer_id": offer_id})
            )
        except ProtocolError as exc:
            logger.warning("could not expire offer %s: %s; retrying", offer_id, exc.message)
            self.set_timer(f"offer:{offer_id}", 1.0, msg)

    async def on_available(self, msg: Message) -> dict[str, Any]:
        caller: Caller | None = msg.caller
        d = msg.data
        customer = caller.user_id if caller is not None and caller.role == "customer" else None
        q = await self._criteria(d, customer)
        ranked = rank([(n.candidate, n.available_since) for n in self.book.available.values()], q)
        limit = d.get("limit") or 20
        return {
            "notaries": [
                {
                    "notary_id": c.notary_id,
                    "name": self.book.notaries[c.notary_id].name,
                    "score": round(s, 6),
                    "status": "available",
                }
                for c, s in ranked[:limit]
            ]
        }

    async def on_presence_list(self, msg: Message) -> dict[str, Any]:
        return {
            "notaries": [
                {"notary_id": n.notary_id, "status": n.status}
                for n in sorted(self.book.notaries.values(), key=lambda n: n.notary_id)
            ]
        }

    # -- matching ------------------------------------------------------------------

    async def _match(self) -> None:
        """Offer the waiting sessions, oldest first, while one waits without
        an offer and a notary is available (actors/match_queue.py). Each
        round picks a notary for as many sessions as there are notaries, then
        asks them all at once (a `hold_offer` waits for the notary's commit:
        asked one by one, those commits would bound the rate of offers). A
        notary that refuses (busy, away, gone: its actor will update us) is
        skipped, and its session is matched again in the next round."""
        while True:
            picked: list[tuple[Pending, str]] = []
            while (p := self.book.next_waiting()) is not None:
                chosen = self._choose(p)
                self.book.reserve(p, chosen)
                picked.append((p, chosen))
            if not picked:
                return
            held = await asyncio.gather(*(self._offer(p, nid) for p, nid in picked))
            for (p, nid), offer_id in zip(picked, held, strict=True):
                if offer_id is None:
                    self.book.release(p)
                    self.book.unofferable(nid)
                else:
                    self._offered(p, nid, offer_id)

    def _choose(self, p: Pending) -> str:
        """The preferred notary if it is a candidate, else the best ranked."""
        if p.preferred is not None and p.preferred in self.book.available:
            if p.preferred not in p.excluded:
                return p.preferred
        chosen = best(self.book.candidates(p), p.criteria)
        assert chosen is not None  # next_waiting() returns a session with a candidate
        return chosen.notary_id

    async def _offer(self, p: Pending, notary_id: str) -> str | None:
        """Ask the notary to hold an offer of this session: its id, or None."""
        offer_id = str(uuid.uuid4())
        timeout = self.ctx.settings.offer_timeout_s
        expires = iso(datetime.now(UTC) + timedelta(seconds=timeout))
        try:
            res = await self.ctx.host.ask(
                notary_address(notary_id),
                Message(
                    "hold_offer",
                    {
                        "offer_id": offer_id,
                        "session_id": p.session_id,
                        "document_type": p.criteria.document_type,
                        "expires_at": expires,
                    },
                ),
            )
        except ProtocolError as exc:
            logger.warning("offer to %s failed: %s", notary_id, exc.message)
            return None
        return offer_id if res.get("ok") else None

    def _offered(self, p: Pending, notary_id: str, offer_id: str) -> None:
        self.book.add_offer(p, offer_id, notary_id)
        self.set_timer(
            f"offer:{offer_id}",
            self.ctx.settings.offer_timeout_s,
            Message("offer_timeout", {"offer_id": offer_id}),
        )
        logger.info("offered session %s to notary %s (offer %s)", p.session_id, notary_id, offer_id)

"""The Matchmaker: the only one that makes offers (one per cluster).

It keeps the index of notaries (from their actors' updates) and the queue of
sessions waiting for one, and offers each waiting session, oldest first, to
its best candidate (shared/MATCHING.md). Its state is rebuilt at start from
the `sessions` and `offers` projections; the invariants themselves are held
by the NotaryActor (one offer, one session) and the SessionActor (one
notary), so a stale view here can cost a retry, never a double assignment.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.actor import Actor, ActorContext
from actors.scoring import Candidate, Criteria, candidate_from_profile, rank
from core.clock import iso
from core.errors import ProtocolError
from core.ids import notary_address
from core.messages import Caller, Message
from persistence import directory, offers, sessions

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class NotaryEntry:
    notary_id: str
    status: str
    offerable: bool
    available_since: float
    candidate: Candidate
    name: str | None = None


@dataclass(slots=True)
class Pending:
    session_id: str
    created_at: str
    criteria: Criteria
    preferred: str | None
    excluded: set[str] = field(default_factory=set)
    offer_id: str | None = None


class Matchmaker(Actor):
    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.notaries: dict[str, NotaryEntry] = {}
        self.pending: dict[str, Pending] = {}
        self.offers: dict[str, tuple[str, str]] = {}  # offer_id -> (session_id, notary_id)

    def is_idle(self) -> bool:
        return False  # one per cluster, always active

    async def on_activate(self) -> None:
        pool = self.ctx.pool
        for row in await sessions.waiting_requests(pool):
            await self._add_pending(row["session_id"], row["request"])
        for row in await offers.offers_for(pool, list(self.pending)):
            p = self.pending[row["session_id"]]
            if row["state"] in ("declined", "expired"):
                p.excluded.add(row["notary_id"])
            elif row["state"] == "open":
                p.offer_id = row["offer_id"]
                self.offers[row["offer_id"]] = (row["session_id"], row["notary_id"])
                remaining = (row["expires_at"] - datetime.now(UTC)).total_seconds()
                self.set_timer(
                    f"offer:{row['offer_id']}",
                    remaining,
                    Message("offer_timeout", {"offer_id": row["offer_id"]}),
                )
        if self.pending:
            logger.info(
                "matchmaker recovered %d waiting sessions, %d open offers",
                len(self.pending),
                len(self.offers),
            )

    async def _add_pending(self, session_id: str, req: dict[str, Any]) -> None:
        if session_id in self.pending:
            return
        self.pending[session_id] = Pending(
            session_id=session_id,
            created_at=req.get("created_at") or "",
            criteria=await self._criteria(req, req.get("customer_id")),
            preferred=req.get("preferred_notary_id"),
        )

    async def _criteria(self, req: dict[str, Any], customer_id: str | None) -> Criteria:
        favorites: frozenset[str] = frozenset()
        if customer_id:
            favorites = frozenset(await directory.favorites_of(self.ctx.pool, customer_id))
        loc = req.get("location")
        price = req.get("price_preference")
        return Criteria(
            document_type=req.get("document_type"),
            price_preference=None if price is None else float(price),
            location=(float(loc["lat"]), float(loc["lng"])) if loc else None,
            favorites=favorites,
        )

    # -- messages --------------------------------------------------------------

    async def on_enqueue(self, msg: Message) -> None:
        session_id = msg.data["session_id"]
        if session_id not in self.pending and not await sessions.is_waiting(
            self.ctx.pool, session_id
        ):
            # A late enqueue (sent again after a shard restart, say) of a
            # session that has its notary or ended: the session is the truth.
            logger.info("enqueue of %s ignored: it no longer waits", session_id)
            return
        await self._add_pending(session_id, msg.data)
        await self._match()

    async def on_session_closed(self, msg: Message) -> None:
        p = self.pending.pop(msg.data["session_id"], None)
        if p is None or p.offer_id is None:
            return
        _session_id, notary_id = self.offers.pop(p.offer_id, (None, ""))
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
                self.offers[p.offer_id] = (p.session_id, notary_id)
                self.set_timer(
                    f"offer:{p.offer_id}", 1.0, Message("offer_timeout", {"offer_id": p.offer_id})
                )
        await self._match()

    async def on_session_assigned(self, msg: Message) -> None:
        """From the session: it has its notary. Out of the queue for good (the
        accepting notary's `offer_resolved` says the same, unless it is lost)."""
        self._forget(msg.data["session_id"])

    def _forget(self, session_id: str) -> None:
        p = self.pending.pop(session_id, None)
        if p is not None and p.offer_id is not None:
            self.offers.pop(p.offer_id, None)
            self.cancel_timer(f"offer:{p.offer_id}")

    async def on_notary_update(self, msg: Message) -> None:
        d = msg.data
        nid = d["notary_id"]
        if d["status"] == "offline":
            self.notaries.pop(nid, None)
        else:
            profile = d.get("profile") or {}
            self.notaries[nid] = NotaryEntry(
                notary_id=nid,
                status=d["status"],
                offerable=bool(d["offerable"]),
                available_since=float(d["available_since"]),
                candidate=candidate_from_profile(nid, profile, d.get("live_avg")),
                name=profile.get("name"),
            )
        if d["offerable"]:
            await self._match()

    async def on_offer_resolved(self, msg: Message) -> None:
        d = msg.data
        self.offers.pop(d["offer_id"], None)
        self.cancel_timer(f"offer:{d['offer_id']}")
        if d.get("refused"):
            # The session refused the offer: it no longer waits for a notary
            # (its state is the truth). Never offer it again.
            self._refused(d["session_id"], d["offer_id"])
            await self._match()
            return
        p = self.pending.get(d["session_id"])
        if p is not None:
            if p.offer_id == d["offer_id"]:
                p.offer_id = None
            if d["outcome"] == "accepted":
                del self.pending[d["session_id"]]
            elif d["outcome"] in ("declined", "expired"):
                p.excluded.add(d["notary_id"])
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
        entry = self.offers.get(offer_id)
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
        ranked = rank(
            [
                (n.candidate, n.available_since)
                for n in self.notaries.values()
                if n.offerable and not self._holding(n.notary_id)
            ],
            q,
        )
        limit = d.get("limit") or 20
        return {
            "notaries": [
                {
                    "notary_id": c.notary_id,
                    "name": self.notaries[c.notary_id].name,
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
                for n in sorted(self.notaries.values(), key=lambda n: n.notary_id)
            ]
        }

    # -- matching ------------------------------------------------------------------

    def _holding(self, notary_id: str) -> bool:
        return any(n == notary_id for _, n in self.offers.values())

    async def _match(self) -> None:
        for p in sorted(self.pending.values(), key=lambda p: p.created_at):
            if p.offer_id is not None:
                continue
            while True:
                pool = [
                    (n.candidate, n.available_since)
                    for n in self.notaries.values()
                    if n.offerable
                    and n.notary_id not in p.excluded
                    and not self._holding(n.notary_id)
                ]
                if not pool:
                    break
                ranked = [c for c, _ in rank(pool, p.criteria)]
                chosen = next((c for c in ranked if c.notary_id == p.preferred), ranked[0])
                if await self._offer(p, chosen.notary_id):
                    break
                # Refused (busy, away, gone): its actor will update us; skip it now.
                self.notaries[chosen.notary_id].offerable = False

    async def _offer(self, p: Pending, notary_id: str) -> bool:
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
            return False
        if not res.get("ok"):
            return False
        p.offer_id = offer_id
        self.offers[offer_id] = (p.session_id, notary_id)
        self.set_timer(
            f"offer:{offer_id}", timeout, Message("offer_timeout", {"offer_id": offer_id})
        )
        logger.info("offered session %s to notary %s (offer %s)", p.session_id, notary_id, offer_id)
        return True

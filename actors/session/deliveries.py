"""The outcomes of a distribution: what the delivery worker reports
(`delivery_result`) and what the session finds in the outbox by itself
(`sync_deliveries`, now and then while DISTRIBUTING), journaled once each;
the last one completes the session.
"""

from __future__ import annotations

from typing import Any

from actors import lifecycle as L
from actors.session.base import SessionBase
from actors.session.state import Event
from core.messages import Message
from persistence.outbox import final_outcomes


class DeliveryOutcomes(SessionBase):
    async def on_delivery_result(self, msg: Message) -> None:
        """From the delivery worker: one recipient's delivery is final."""
        await self._delivery_results([msg.data])

    async def _delivery_results(self, results: list[dict[str, Any]]) -> None:
        if self.state["state"] != L.DISTRIBUTING:
            return
        recipients = self.state.get("recipients") or []
        done = dict(self.state.get("deliveries") or {})
        events: list[Event] = []
        for r in results:
            i = r["recipient"]
            if not 0 <= i < len(recipients) or str(i) in done:
                continue  # a repeat: already recorded
            data = {
                "recipient": i,
                "channel": recipients[i]["channel"],
                "to": recipients[i].get("hint"),
                "status": r["status"],
                "delivery_id": r.get("delivery_id"),
            }
            if r.get("reason"):
                data["reason"] = r["reason"]
            events.append(("delivery.status", data))
            done[str(i)] = r["status"]
        if not events:
            return
        if len(done) == len(recipients):
            events.append(self._move(L.COMPLETED, "system"))
        await self.commit(events)
        self._after_move()

    async def on_sync_deliveries(self, msg: Message) -> None:
        """While distributing, look at the outbox now and then: an outcome the
        worker reported may have been lost (a full mailbox, a failed commit)."""
        await self._sync_deliveries()
        self._resync_later()

    def _resync_later(self) -> None:
        if self.state["state"] == L.DISTRIBUTING:
            self.set_timer(
                "deliveries", self.ctx.settings.delivery_resync_s, Message("sync_deliveries")
            )

    async def _sync_deliveries(self) -> None:
        """Outcomes the worker recorded but the session has not journaled yet."""
        await self._delivery_results(await final_outcomes(self.ctx.pool, self.session_id))

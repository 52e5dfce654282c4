"""How a session ends: `session.notarize` and the finalisation that issues
the signed record of the act (NOTARIZING → NOTARIZED), `session.distribute`
(→ DISTRIBUTING, or straight on to COMPLETED with no recipients), and
`session.cancel` (with an incomplete-act entry in the notary's book).
"""

from __future__ import annotations

from typing import Any

from actors import lifecycle as L
from actors.session.base import logger
from actors.session.deliveries import DeliveryOutcomes
from actors.session.state import Event, Recipient, as_record
from core.clock import now_iso
from core.errors import ProtocolError
from core.messages import Message, Reply
from persistence.book import book_entry, numbered_book_entry, reserve_entry_no
from persistence.envelopes import build_envelope, envelope_row
from persistence.keys import mask


class EndingRequests(DeliveryOutcomes):
    async def on_session_notarize(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._in_state(L.VIDEO_COMPLETED)
        if self.state["signed"] is None or self.state["sealed"] is None:
            raise ProtocolError("conflict", "the act must be signed and sealed first")
        if self.ctx.settings.recording == "required" and self.state["recording"] is None:
            raise ProtocolError("conflict", "no finished recording yet (ENF_RECORDING=required)")
        await self._commit_request(msg, [self._move(L.NOTARIZING, caller.user_id)], {})
        self.set_timer("finalize", 0, Message("finalize"))
        return Reply({})

    async def on_finalize(self, msg: Message) -> None:
        """NOTARIZING → NOTARIZED: the record of the act is issued. The book
        entry's number is reserved first, in a statement of its own, so the
        signed envelope can carry it; a finalisation run again (an outage, a
        crash before the commit) gets the same number."""
        if self.state["state"] != L.NOTARIZING:
            return
        enp_id = self.state["enp_id"]
        if enp_id is None:  # a bug: NOTARIZING comes after the assignment
            raise RuntimeError(f"session {self.session_id} is notarizing without a notary")
        entry_no = await reserve_entry_no(self.ctx.pool, enp_id, self.session_id)
        at = now_iso()
        keys = self.ctx.keys
        envelope = build_envelope(
            as_record(self.state),
            self.session_id,
            at=at,
            journal_seq=self.seq,
            journal_head=self.head_hash,
            keys=keys,
            retention_years=self.ctx.settings.retention_years,
            entry_no=entry_no,
        )
        signed = keys.signer.sign(envelope)
        envelope_id = envelope["uid"]
        await self.commit(
            [
                self._move(L.NOTARIZED, "system"),
                ("session.notarized", {"envelope_id": envelope_id}),
            ],
            rows=[
                envelope_row(signed, self.session_id, keys),
                numbered_book_entry(
                    as_record(self.state), self.session_id, at=at, entry_no=entry_no
                ),
            ],
        )
        logger.info("session %s notarized: envelope %s issued", self.session_id, envelope_id)
        self._after_move()

    async def on_session_distribute(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer", "enp")
        self._in_state(L.NOTARIZED)
        pii = self.ctx.keys.pii
        # Phone numbers and addresses are personal data: sealed in the journal,
        # with a masked hint for people reading the events.
        recipients: list[Recipient] = [
            {
                "channel": r["channel"],
                "to": pii.seal(r["to"], self.session_id),
                "hint": mask(r["to"]),
            }
            for r in msg.data["recipients"]
        ]
        distributing = self._move(L.DISTRIBUTING, caller.user_id, recipients=recipients)
        events: list[Event] = [distributing]
        if not recipients:
            events.append(self._move(L.COMPLETED, "system", after=distributing))
        await self._commit_request(msg, events, {})
        self._after_move()
        self._resync_later()
        return Reply({})

    async def on_session_cancel(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer", "enp", "admin")
        if self.state["state"] not in L.CANCELLABLE:
            raise ProtocolError("conflict", f"cannot cancel in state {self.state['state']}")
        if self.state.get("sealed"):
            # PROTOCOL §5: once the seal is applied the act is done; it ends
            # notarized (or FAILED, with its record), never cancelled.
            raise ProtocolError("conflict", "the act is sealed: it can no longer be cancelled")
        reason = msg.data["reason"]
        in_call = self.state["state"] == L.VIDEO_IN_PROGRESS
        await self.commit(
            [self._move(L.CANCELLED, caller.user_id, reason=reason)],
            caller=msg.caller,
            request=(msg.kind, msg.data),
            reply=Reply({}),
            statements=self._incomplete_act(reason),
        )
        self._after_move()
        if in_call:
            await self._stop_media()
        return Reply({})

    def _incomplete_act(self, reason: str) -> list[tuple[str, tuple[Any, ...]]]:
        """A session ending without the act after a notary was assigned gets an
        incomplete-act entry in that notary's book."""
        if not self.state.get("enp_id"):
            return []
        # Under a number reserved by the statement itself, within the commit.
        return [book_entry(as_record(self.state), self.session_id, at=now_iso(), reason=reason)]

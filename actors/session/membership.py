"""Requests that bring people into a session and show it to them:
`session.request` (the customer opens it), `session.join`, `session.leave`
and `snapshot`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from actors import lifecycle as L
from actors.session.interruptions import Interruptions
from actors.session.state import Event, Participant, Request
from actors.session.view import SessionView
from core.clock import iso
from core.errors import ProtocolError
from core.messages import Caller, Message, Reply


class MembershipRequests(Interruptions):
    async def on_session_request(self, msg: Message) -> Reply:
        caller = msg.caller
        assert caller is not None
        d = msg.data
        topic: dict[str, int | None] = {self.actor_id: 0}
        if self.exists:
            if self.state["customer_id"] != caller.user_id:
                raise ProtocolError("not_found", "no such session")
            if self.state["document"] != d["document"]:
                raise ProtocolError("conflict", "idempotency key already used for another document")
            self._track(caller)
            await self._maybe_resume()  # the customer's connection is back
            return Reply(
                {"session_id": self.session_id, "state": self.state["state"]},
                follow=topic,
                track=True,
                heads={self.actor_id: self.seq},
            )
        event = self._move(L.REQUESTED, caller.user_id, request=self._request(caller, d))
        reply = {"session_id": self.session_id, "state": L.REQUESTED}
        await self._commit_request(msg, [event], reply)
        self._track(caller)
        self._arm_ttl()
        self._enqueue_for_matching()
        return Reply(reply, follow=topic, track=True, heads={self.actor_id: self.seq})

    def _request(self, caller: Caller, d: dict[str, Any]) -> Request:
        now = datetime.now(UTC)
        return {
            "customer_id": caller.user_id,
            "document": d["document"],
            # Personal data is sealed before it reaches the journal.
            "principal": (
                self.ctx.keys.pii.seal(d["principal"], self.session_id)
                if d.get("principal")
                else None
            ),
            "price_preference": d.get("price_preference"),
            "location": d.get("location"),
            "preferred_notary_id": d.get("preferred_notary_id"),
            "idempotency_key": d["idempotency_key"],
            "kyc_session_id": caller.claims.get("kyc_session_id"),
            "face_match_score": caller.claims.get("face_match_score"),
            "expires_at": iso(now + timedelta(seconds=self.ctx.settings.request_ttl_s)),
        }

    async def on_session_join(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer", "enp", "admin")
        d = msg.data
        since = d.get("since_seq")
        if since is not None and since > self.seq:
            raise ProtocolError(
                "bad_request", f"since_seq {since} is ahead of the session (latest seq {self.seq})"
            )
        role = self._role_in(caller)
        if role == "admin" or self.state["state"] in L.TERMINAL:
            return Reply(
                {"session": self.snapshot_view()},
                follow={self.actor_id: self.seq if since is None else since},
                heads={self.actor_id: self.seq},
            )
        p = self.state["participants"][caller.user_id]
        consent = d.get("consent")
        _no_withdrawal(p, consent)
        self._check_reverified(caller)
        self._track(caller)
        self.cancel_timer(f"grace:{caller.user_id}")
        view = self.snapshot_view()
        data: dict[str, Any] = {"user_id": caller.user_id, "role": role}
        if consent is not None and consent != p.get("consent"):
            data["consent"] = {**(p.get("consent") or {}), **consent}
        if d.get("location") is not None and d["location"] != p.get("location"):
            data["location"] = d["location"]
        if not p["present"] or len(data) > 2:
            await self.commit([("participant.joined", data)])
        await self._maybe_resume()
        out: dict[str, Any] = {"session": view}
        if self.state["state"] == L.VIDEO_IN_PROGRESS:
            # Back in the call (a reconnect): how to take part, afresh.
            out["video"] = self._video_config(caller.user_id)
        return Reply(
            out,
            follow={self.actor_id: view["seq"] if since is None else since},
            track=True,
            heads={self.actor_id: view["seq"]},
        )

    async def on_session_leave(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer", "enp")
        self.conns.pop(caller.user_id, None)
        self.cancel_timer(f"grace:{caller.user_id}")
        p = self.state["participants"][caller.user_id]
        if p["present"] and self.state["state"] not in L.TERMINAL:
            # Leaving the call under way pauses the act, as being away does.
            events: list[Event] = [
                ("participant.left", {"user_id": caller.user_id, "role": p["role"]}),
                *self._pause("party_left", caller.user_id),
            ]
            await self._commit_with_pause(events)
        return Reply({})

    async def on_snapshot(self, msg: Message) -> SessionView:
        self._require(msg.caller, "customer", "enp", "admin")
        return self.snapshot_view()


def _no_withdrawal(p: Participant, consent: dict[str, bool] | None) -> None:
    """Consent given cannot be taken back by a later join: a conflict."""
    given = p.get("consent")
    if consent is None or not given:
        return
    withdrawn = [k for k, v in given.items() if v and not consent.get(k, v)]
    if withdrawn:
        raise ProtocolError(
            "conflict",
            f"consent cannot be withdrawn; cancel the session instead ({', '.join(withdrawn)})",
        )

"""SessionBase: what every session handler stands on — the actor's identity
and live connections, its typed state and fold, the checks every request
makes (`not_found`, then `conflict`), `_move()` (the one place a session's
`state` changes), and what is owed to others once a move is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from actors import lifecycle as L
from actors.actor import ActorContext
from actors.eventsourced import EventSourced
from actors.session.effects import notification, outbox_rows
from actors.session.fold import apply, copy_for_fold
from actors.session.state import Event, SessionState, initial_state
from actors.session.view import SessionView, matching_request, public_view, sessions_row
from core.clock import parse_iso
from core.errors import ProtocolError
from core.ids import MATCHMAKER, notary_address
from core.messages import Caller, Message, Reply
from persistence.journal import StoredEvent
from persistence.projections import Projection

# One logger for the package: its records keep the name they had before the split.
logger = logging.getLogger("actors.session")


class SessionBase(EventSourced[SessionState]):
    # Its id derives from the idempotency key: a repeat reaches this handler.
    SELF_IDEMPOTENT = frozenset({"session.request"})

    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.session_id = actor_id.split(":", 1)[1]
        # Live connections per participant (not durable: rebuilt as clients re-join).
        self.conns: dict[str, set[str]] = {}

    # -- state: fold and projections ----------------------------------------------

    def initial_state(self) -> SessionState:
        return initial_state()

    def apply(self, state: SessionState, event: StoredEvent) -> None:
        apply(state, event)

    def copy_for_commit(self, state: SessionState) -> SessionState:
        return copy_for_fold(state)

    def projections(self, s: SessionState, events: Sequence[StoredEvent]) -> list[Projection]:
        if not events or s["state"] is None:
            return []
        settings = self.ctx.settings
        out = (
            outbox_rows(self.session_id, s, events, settings, self.ctx.keys.pii.link_secret)
            if settings.outbox
            else []
        )
        out.append(sessions_row(self.session_id, s, events[-1]))
        return out

    def snapshot_view(self) -> SessionView:
        return public_view(
            self.session_id, self.state, self.seq, self.conns, self.ctx.settings.join_window_s
        )

    # -- checks -------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.state["state"] is not None

    def _role_in(self, caller: Caller) -> str | None:
        """'customer' / 'enp' for a participant, 'admin' for an admin, else None."""
        p = self.state["participants"].get(caller.user_id)
        if p is not None and p["role"] == caller.role:
            return str(p["role"])
        if caller.role == "admin":
            return "admin"
        return None

    def _require(self, caller: Caller | None, *roles: str) -> Caller:
        """not_found unless the session exists and the caller has one of `roles` in it."""
        if caller is None or not self.exists or self._role_in(caller) not in roles:
            raise ProtocolError("not_found", "no such session")
        return caller

    def _in_state(self, *states: str) -> None:
        if self.state["state"] not in states:
            raise ProtocolError(
                "conflict",
                f"not allowed in state {self.state['state']} (needs {' or '.join(states)})",
            )

    # -- moves and commits ----------------------------------------------------------

    def _move(self, dst: str, by: str, *, after: Event | None = None, **extra: Any) -> Event:
        """The event for a state change; the one place transitions are decided.
        From the current state, or from the move `after` decided earlier for
        the same commit."""
        src = self.state["state"] if after is None else after[1]["state"]
        if not L.can_move(src, dst):
            raise ProtocolError("conflict", f"cannot move from {src} to {dst}")
        logger.info(
            "session %s state %s -> %s",
            self.session_id,
            src,
            dst,
            extra={"session_id": self.session_id},
        )
        return "session.state", {"state": dst, "prev": src, "by": by, **extra}

    async def _commit_request(
        self, msg: Message, events: list[Event], reply: dict[str, Any]
    ) -> list[StoredEvent]:
        return await self.commit(
            events, caller=msg.caller, request=(msg.kind, msg.data), reply=Reply(reply)
        )

    def _after_move(self) -> None:
        """Side effects owed to others once a state is durable (tell only: no waits)."""
        st = self.state["state"]
        host = self.ctx.host
        if st != L.REQUESTED:
            self.cancel_timer("ttl")
        if st in (L.CANCELLED, L.FAILED):
            host.tell(MATCHMAKER, Message("session_closed", {"session_id": self.session_id}))
        elif st == L.ENP_ASSIGNED:
            # Out of the queue for good, even if the notary's report is lost.
            host.tell(MATCHMAKER, Message("session_assigned", {"session_id": self.session_id}))
        enp = self.state.get("enp_id")
        if enp and st in L.RELEASES_NOTARY:
            host.tell(
                notary_address(enp), Message("session_ended", {"session_id": self.session_id})
            )
        self._notify(st)

    def _notify(self, state: str | None) -> None:
        data = notification(self.session_id, state)
        if data is not None:
            self.publish_ephemeral(self.actor_id, "notification", data)

    # -- waiting for a notary ---------------------------------------------------------

    def _arm_ttl(self) -> None:
        remaining = (parse_iso(self.state["expires_at"]) - datetime.now(UTC)).total_seconds()
        self.set_timer("ttl", remaining, Message("request_expired"))

    def _enqueue_for_matching(self) -> None:
        self.ctx.host.tell(
            MATCHMAKER,
            Message("enqueue", {"session_id": self.session_id, **matching_request(self.state)}),
        )

    # -- connections and the call ---------------------------------------------------

    def is_idle(self) -> bool:
        return super().is_idle() and not any(self.conns.values())

    def _track(self, caller: Caller) -> None:
        if caller.connection_id and caller.role != "admin":
            self.conns.setdefault(caller.user_id, set()).add(caller.connection_id)

    async def _stop_media(self) -> None:
        """The call is over (`video.end`, or the session ended during it): the
        recorder finalises what it has, a hosted room is closed."""
        if self.ctx.media is not None:
            self.ctx.media.finish(self.session_id)
        if self.ctx.video is not None:
            await self.ctx.video.end_room(self.session_id)

    def _video_config(self, user_id: str, room: str | None = None) -> dict[str, Any]:
        """How `user_id` takes part in the call: provider, ICE servers, whether
        the recorder is on, and with a hosted provider its room (`room`, when
        just created) and a token."""
        settings = self.ctx.settings
        config: dict[str, Any] = {
            "provider": settings.video_provider,
            "ice_servers": settings.ice_server_list,
            # With webrtc, each party also sends its media to the server's
            # recorder peer (signal with to: "recorder").
            "recorder": self.ctx.media is not None and settings.recording != "off",
        }
        video = self.ctx.video
        room = room or self.state.get("video_room")
        if video is not None:
            if room is not None:
                config["room"] = room
            config["room_name"] = self.session_id
            config["token"] = video.token(self.session_id, user_id)
        return config

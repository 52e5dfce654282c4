"""Requests during the video call: `video.start`, `signal` (between the
parties, or to the server's recorder peer), `checks.record`, the act itself
(`act.sign`, `act.seal`, where every party must be in an allowed country)
and `video.end`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from actors import lifecycle as L
from actors.session.base import logger
from actors.session.interruptions import Interruptions
from core.errors import ProtocolError
from core.messages import Caller, Message, Reply
from persistence.directory import notary_profile


class CallRequests(Interruptions):
    async def on_video_start(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        if self.state["state"] == L.VIDEO_IN_PROGRESS:
            # Rejoining the call: the same answer (a fresh token), no new event.
            return Reply(self._video_config(caller.user_id))
        self._in_state(L.ENP_ASSIGNED)
        self._ready_for_video()
        room = await self._create_room()
        reply = self._video_config(caller.user_id, room)
        stored_reply = {k: v for k, v in reply.items() if k != "token"}
        # The hosted room is journaled with the move: a re-issued video.start
        # (a reconnect, a restart) answers with the same room.
        extra: dict[str, Any] = {"recorder": reply["recorder"]}
        if room:
            extra["room"] = room
        await self._commit_request(
            msg,
            [self._move(L.VIDEO_IN_PROGRESS, caller.user_id, **extra)],
            stored_reply,
        )
        self._notify(L.VIDEO_IN_PROGRESS)
        self._arm_timers()  # the join window is met
        # The customer learns how to take part (ICE servers, whether the recorder
        # is on, its own Twilio token): an ephemeral event to it alone, since it
        # may carry credentials that must not be journaled.
        customer_id = self.state["customer_id"]
        self.publish_ephemeral(
            self.actor_id, "video.config", self._video_config(customer_id), to_user=customer_id
        )
        return Reply(reply)

    def _ready_for_video(self) -> None:
        """Both parties joined, and the customer consented to recording and privacy."""
        missing = [p["role"] for p in self.state["participants"].values() if not p["present"]]
        if missing:
            raise ProtocolError("conflict", f"waiting for {' and '.join(missing)} to join")
        customer = self.state["participants"][self.state["customer_id"]]
        consent = customer.get("consent") or {}
        missing_consent = [k for k in ("recording", "privacy") if not consent.get(k)]
        if missing_consent:
            raise ProtocolError(
                "conflict",
                "the customer has not consented to "
                + " and ".join(missing_consent)
                + " (session.join consent)",
            )

    async def _create_room(self) -> str | None:
        """The hosted provider's room for the call (None without one)."""
        video = self.ctx.video
        if video is None:
            return None
        try:
            return await video.create_room(self.session_id)
        except Exception as exc:
            logger.error("twilio room for %s not created: %s", self.session_id, exc)
            raise ProtocolError(
                "unavailable", "could not create the video room, try again"
            ) from None

    async def on_signal(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer", "enp")
        d = msg.data
        self._in_state(L.VIDEO_IN_PROGRESS)
        to = d["to"]
        if to == "recorder":
            return await self._signal_recorder(caller, d)
        if to == caller.user_id or to not in self.state["participants"]:
            raise ProtocolError("not_found", "no such participant in this session")
        out = {"from": caller.user_id, "kind": d["kind"]}
        for k in ("sdp", "candidate"):
            if d.get(k) is not None:
                out[k] = d[k]
        self.publish_ephemeral(self.actor_id, "signal", out, to_user=to)
        return Reply({})

    async def _signal_recorder(self, caller: Caller, d: dict[str, Any]) -> Reply:
        """The server's recorder is the third peer: offers get its answer back
        as a `signal` event from "recorder"; candidates are passed on."""
        media = self.ctx.media
        if self.ctx.settings.recording == "off":
            raise ProtocolError("conflict", "recording is off: there is no recorder peer")
        if media is None:
            raise ProtocolError("conflict", "this video provider records by itself")
        if d["kind"] == "offer":
            answer = await media.offer(self.session_id, caller.user_id, d["sdp"])
            self.publish_ephemeral(
                self.actor_id,
                "signal",
                {"from": "recorder", "kind": "answer", "sdp": answer},
                to_user=caller.user_id,
            )
        elif d["kind"] == "ice":
            await media.ice(self.session_id, caller.user_id, d["candidate"])
        else:
            raise ProtocolError("bad_request", "the recorder answers offers; send it an offer")
        return Reply({})

    async def on_checks_record(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._full_view(caller)
        d = msg.data
        checks = {
            "comprehension_confirmed": d["comprehension_confirmed"],
            "duress_check_passed": d["duress_check_passed"],
            "by": caller.user_id,
        }
        await self._commit_request(msg, [("checks.recorded", checks)], {})
        return Reply({})

    # -- the act: where the parties are ---------------------------------------------

    def _refuse_country(self, whose: str, country: str) -> ProtocolError:
        return ProtocolError(
            "forbidden",
            f"parties must be in {self.ctx.settings.allowed_countries}"
            f" during the act; {whose} location says {country}",
        )

    def _check_location(self, caller: Caller) -> None:
        """A caller whose declared place is outside the allowed countries is
        refused first (`forbidden` precedes `conflict`)."""
        loc = self.state["participants"][caller.user_id].get("location")
        country = loc.get("country") if loc else None
        if country is not None and country.upper() not in self.ctx.settings.allowed_country_set:
            raise self._refuse_country("your", country)

    def _check_all_locations(self, caller: Caller) -> None:
        """For the act itself, every party must have declared where they are
        (`session.join` location.country), in an allowed country."""
        allowed = self.ctx.settings.allowed_country_set
        for uid, p in self.state["participants"].items():
            who = "your" if uid == caller.user_id else f"the {p['role']}'s"
            loc = p.get("location")
            country = loc.get("country") if loc else None
            if country is None:
                raise ProtocolError(
                    "forbidden",
                    f"{who} location is not declared: send session.join with"
                    " location {lat, lng, country} before the act",
                )
            if country.upper() not in allowed:
                raise self._refuse_country(who, country)

    async def on_act_sign(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer")
        self._check_location(caller)
        self._in_state(L.VIDEO_IN_PROGRESS)
        if self.state["signed"] is not None:
            raise ProtocolError("conflict", "the act is already signed")
        self._check_all_locations(caller)
        self._full_view(caller)
        await self._commit_request(
            msg,
            [("act.signed", {"user_id": caller.user_id, "signature": msg.data["signature"]})],
            {},
        )
        return Reply({})

    async def on_act_seal(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._check_location(caller)
        await self._check_commission(caller)
        self._in_state(L.VIDEO_IN_PROGRESS)
        checks = self.state["checks"]
        if not (checks.get("comprehension_confirmed") and checks.get("duress_check_passed")):
            raise ProtocolError(
                "conflict", "record comprehension and duress checks (both true) before sealing"
            )
        if self.state["signed"] is None:
            raise ProtocolError("conflict", "the principal has not signed yet")
        if self.state["sealed"] is not None:
            raise ProtocolError("conflict", "the act is already sealed")
        self._check_all_locations(caller)
        self._full_view(caller)
        d = msg.data
        sealed = {"user_id": caller.user_id, "signature": d["signature"], "seal": d["seal"]}
        await self._commit_request(msg, [("act.sealed", sealed)], {})
        return Reply({})

    async def _check_commission(self, caller: Caller) -> None:
        """The notary's commission, checked again at the seal: the token's
        claim and the profile (PROTOCOL §5)."""
        profile = await notary_profile(self.ctx.pool, caller.user_id)
        today = datetime.now(UTC).date()
        for value in (
            caller.claims.get("commission_expires"),
            (profile["profile"] or {}).get("commission_expires") if profile else None,
        ):
            if not value:
                continue
            try:
                expired = date.fromisoformat(str(value)[:10]) < today
            except ValueError:
                expired = True
            if expired:
                raise ProtocolError(
                    "forbidden", f"your notarial commission has expired ({str(value)[:10]})"
                )

    async def on_video_end(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._in_state(L.VIDEO_IN_PROGRESS)
        if self.state.get("paused") and self.state["sealed"] is None:
            raise ProtocolError(
                "conflict",
                f"the act is paused ({self._pause_cause()}) and not sealed: wait for the"
                " parties or cancel the session",
            )
        await self._commit_request(msg, [self._move(L.VIDEO_COMPLETED, caller.user_id)], {})
        self._arm_timers()  # the wait for the recording
        await self._stop_media()
        return Reply({})

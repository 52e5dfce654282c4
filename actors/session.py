"""SessionActor: one notarization, from request to completion (PROTOCOL §4, §5).

Every request is checked in the contract's order — the gateway has already
refused malformed data and wrong roles — so here: `not_found` (no such
session, or not yours), then `conflict` (wrong state). Every state change
goes through `commit()`; `_move()` is the one place that changes `state`,
and it logs the transition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from actors import lifecycle as L
from actors.actor import ActorContext
from actors.eventsourced import EventSourcedActor
from core.clock import iso, now_iso, parse_iso
from core.errors import ProtocolError
from core.ids import MATCHMAKER, notary_address
from core.links import sign_path
from core.messages import Caller, Message, Reply
from persistence.book import book_entry
from persistence.envelopes import build_envelope, envelope_statement
from persistence.journal import StoredEvent
from persistence.keys import mask
from persistence.outbox import sms_message, webhook_event
from persistence.projections import SESSIONS, Projection

logger = logging.getLogger(__name__)


class SessionActor(EventSourcedActor):
    # Its id derives from the idempotency key: a repeat reaches this handler.
    SELF_IDEMPOTENT = frozenset({"session.request"})

    def __init__(self, actor_id: str, ctx: ActorContext) -> None:
        super().__init__(actor_id, ctx)
        self.session_id = actor_id.split(":", 1)[1]
        # Live connections per participant (not durable: rebuilt as clients re-join).
        self.conns: dict[str, set[str]] = {}

    def initial_state(self) -> dict[str, Any]:
        return {
            "state": None,
            "participants": {},
            "checks": {},
            "signed": None,
            "sealed": None,
            "recording": None,
            "envelope_id": None,
        }

    # -- folding events -----------------------------------------------------

    def apply(self, s: dict[str, Any], e: StoredEvent) -> None:
        d = e.data
        if e.name == "session.state":
            s["state"] = d["state"]
            s["updated_at"] = e.at
            if d["state"] == L.REQUESTED:
                req = d["request"]
                s.update(
                    customer_id=req["customer_id"],
                    document=req["document"],
                    request=req,
                    created_at=e.at,
                    expires_at=req["expires_at"],
                    enp_id=None,
                    amount=None,
                    platform_fee=None,
                    enp_fee=None,
                )
                s["participants"][req["customer_id"]] = {"role": "customer", "present": False}
            elif d["state"] == L.ENP_ASSIGNED:
                s.update(
                    enp_id=d["enp_id"],
                    amount=d["amount"],
                    platform_fee=d["platform_fee"],
                    enp_fee=d["enp_fee"],
                    offer_id=d.get("offer_id"),
                    assigned_at=e.at,
                    enp_name=d.get("enp_name"),
                    enp_license=d.get("enp_license"),
                )
                s["participants"][d["enp_id"]] = {"role": "enp", "present": False}
            elif d["state"] == L.VIDEO_IN_PROGRESS:
                s["video_started_at"] = e.at
            elif d["state"] == L.VIDEO_COMPLETED:
                s["video_ended_at"] = e.at
            elif d["state"] in (L.CANCELLED, L.FAILED):
                s["reason"] = d.get("reason")
            elif d["state"] == L.DISTRIBUTING:
                s["recipients"] = d.get("recipients", [])
        elif e.name == "participant.joined":
            p = s["participants"][d["user_id"]]
            p["present"] = True
            if "consent" in d:
                p["consent"] = d["consent"]
            if "location" in d:
                p["location"] = d["location"]
        elif e.name == "participant.left":
            s["participants"][d["user_id"]]["present"] = False
        elif e.name == "checks.recorded":
            s["checks"] = {
                "comprehension_confirmed": d["comprehension_confirmed"],
                "duress_check_passed": d["duress_check_passed"],
                "at": e.at,
            }
        elif e.name == "act.signed":
            s["signed"] = {"user_id": d["user_id"], "signature": d["signature"], "at": e.at}
        elif e.name == "act.sealed":
            s["sealed"] = {
                "user_id": d["user_id"],
                "signature": d["signature"],
                "seal": d["seal"],
                "at": e.at,
            }
        elif e.name == "delivery.status":
            s.setdefault("deliveries", {})[str(d["recipient"])] = d["status"]
        elif e.name == "recording.started":
            s["recording_started"] = True
        elif e.name == "recording.ready":
            s["recording"] = {k: d[k] for k in ("url", "sha256", "bytes", "duration_s")}
            s["recording_tracks"] = d.get("tracks") or []
        elif e.name == "recording.failed":
            s["recording_failed"] = {"reason": d["reason"], "at": e.at}
            s["recording_started"] = False  # a restarted video records anew
        elif e.name == "session.notarized":
            s["envelope_id"] = d["envelope_id"]
            s["notarized_at"] = e.at

    def projections(self, s: dict[str, Any], events: Sequence[StoredEvent]) -> list[Projection]:
        if not events or s["state"] is None:
            return []
        out = self._outbox(s, events) if self.ctx.settings.outbox else []
        out.append(
            Projection(
                SESSIONS,
                (
                    self.session_id,
                    s["state"],
                    s["customer_id"],
                    s.get("enp_id"),
                    events[-1].seq,
                    self._public(s, events[-1].seq, live=False),
                    _matching_request(s),
                    parse_iso(s["created_at"]),
                    parse_iso(events[-1].at),
                ),
            )
        )
        return out

    def _outbox(self, s: dict[str, Any], events: Sequence[StoredEvent]) -> list[Projection]:
        """Events for the outside world, committed with their causes."""
        sid = self.session_id
        rows: list[Projection] = []
        for e in events:
            d = e.data
            if e.name == "session.notarized":
                rows.append(webhook_event(sid, e.seq, "session.notarized", dict(d), e.at))
            if e.name != "session.state":
                continue
            state = d["state"]
            public: dict[str, Any] = {
                k: d[k] for k in ("state", "prev", "by", "reason", "enp_id") if k in d
            }
            rows.append(webhook_event(sid, e.seq, f"session.{state.lower()}", public, e.at))
            money = {
                "amount": s.get("amount"),
                "platform_fee": s.get("platform_fee"),
                "enp_fee": s.get("enp_fee"),
                "currency": "PHP",
                "customer_id": s.get("customer_id"),
                "enp_id": s.get("enp_id"),
            }
            held = s.get("enp_id") is not None and s.get("amount") is not None
            if state == L.ENP_ASSIGNED:
                rows.append(webhook_event(sid, e.seq, "payment.hold", money, e.at))
            elif state == L.COMPLETED and held:
                rows.append(webhook_event(sid, e.seq, "payment.release", money, e.at))
            elif state == L.CANCELLED and held:
                rows.append(
                    webhook_event(
                        sid, e.seq, "payment.refund", {**money, "reason": d.get("reason")}, e.at
                    )
                )
            elif state == L.DISTRIBUTING:
                rows += self._distribution(s, e)
        return rows

    def _distribution(self, s: dict[str, Any], e: StoredEvent) -> list[Projection]:
        envelope_id = s.get("envelope_id")
        path, _ = sign_path(
            self.ctx.keys.pii.link_secret,
            f"/v1/envelopes/{envelope_id}/shared",
            self.ctx.settings.share_link_ttl_s,
        )
        settings = self.ctx.settings
        link = (settings.public_url or f"http://{settings.host}:{settings.port}") + path
        rows = []
        for i, r in enumerate(e.data.get("recipients") or []):
            if r["channel"] == "sms":
                body = f"Your notarized document {envelope_id} is ready: {link}"
                rows.append(sms_message(self.session_id, self.session_id, e.seq, r["to"], body, i))
            else:
                data = {"envelope_id": envelope_id, "recipient": i, "to": r["to"], "link": link}
                rows.append(
                    webhook_event(self.session_id, e.seq, "document.distributed", data, e.at, i)
                )
        return rows

    # -- views ----------------------------------------------------------------

    def _public(self, s: dict[str, Any], seq: int, *, live: bool = True) -> dict[str, Any]:
        """The session snapshot of PROTOCOL §4."""
        participants = [
            {
                "user_id": uid,
                "role": p["role"],
                "online": bool(self.conns.get(uid)) if live else p["present"],
            }
            for uid, p in s["participants"].items()
        ]
        checks = {k: v for k, v in s["checks"].items() if k != "at"}
        return {
            "session_id": self.session_id,
            "state": s["state"],
            "customer_id": s.get("customer_id"),
            "enp_id": s.get("enp_id"),
            "document": s.get("document"),
            "amount": s.get("amount"),
            "platform_fee": s.get("platform_fee"),
            "enp_fee": s.get("enp_fee"),
            "participants": participants,
            "checks": checks,
            "signed": s["signed"] is not None,
            "sealed": s["sealed"] is not None,
            "recording": s["recording"],
            "envelope_id": s["envelope_id"],
            "created_at": s.get("created_at"),
            "seq": seq,
        }

    def snapshot_view(self) -> dict[str, Any]:
        return self._public(self.state, self.seq)

    # -- helpers --------------------------------------------------------------

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

    def _move(self, dst: str, by: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        """The event for a state change; the one place transitions are decided."""
        src = self.state["state"]
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
        self, msg: Message, events: list[tuple[str, dict[str, Any]]], reply: dict[str, Any]
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
        enp = self.state.get("enp_id")
        if enp and st in L.RELEASES_NOTARY:
            host.tell(
                notary_address(enp), Message("session_ended", {"session_id": self.session_id})
            )
        self._notify(st)

    # The platform design's notifications, for people (the events say the same
    # to programs): to every connected follower of the session, not journaled.
    NOTIFICATIONS = {
        L.ENP_ASSIGNED: ("enp_assigned", "A notary has accepted your request."),
        L.VIDEO_IN_PROGRESS: ("video_starting", "The video session is starting."),
        L.NOTARIZED: ("notarization_complete", "The document is notarized."),
        L.CANCELLED: ("request_cancelled", "The notarization request was cancelled."),
        L.COMPLETED: ("session_completed", "The notarized document has been distributed."),
    }

    def _notify(self, state: str) -> None:
        found = self.NOTIFICATIONS.get(state)
        if found is not None:
            kind, text = found
            self.publish_ephemeral(
                self.actor_id,
                "notification",
                {"kind": kind, "session_id": self.session_id, "message": text},
            )

    def _arm_ttl(self) -> None:
        remaining = (parse_iso(self.state["expires_at"]) - datetime.now(UTC)).total_seconds()
        self.set_timer("ttl", remaining, Message("request_expired"))

    def _enqueue_for_matching(self) -> None:
        self.ctx.host.tell(
            MATCHMAKER,
            Message("enqueue", {"session_id": self.session_id, **_matching_request(self.state)}),
        )

    def is_idle(self) -> bool:
        return super().is_idle() and not any(self.conns.values())

    # -- requests -----------------------------------------------------------

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
            return Reply(
                {"session_id": self.session_id, "state": self.state["state"]},
                follow=topic,
                track=True,
            )
        now = datetime.now(UTC)
        request = {
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
        event = self._move(L.REQUESTED, caller.user_id, request=request)
        reply = {"session_id": self.session_id, "state": L.REQUESTED}
        await self._commit_request(msg, [event], reply)
        self._track(caller)
        self._arm_ttl()
        self._enqueue_for_matching()
        return Reply(reply, follow=topic, track=True)

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
        if consent is not None and p.get("consent"):
            withdrawn = [k for k, v in p["consent"].items() if v and not consent.get(k, v)]
            if withdrawn:
                raise ProtocolError(
                    "conflict",
                    "consent cannot be withdrawn; cancel the "
                    f"session instead ({', '.join(withdrawn)})",
                )
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
            await self.commit(
                [("participant.left", {"user_id": caller.user_id, "role": p["role"]})]
            )
        return Reply({})

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

    # -- reports of the recorder (tells from media.recorder) -----------------------

    async def on_recording_started(self, msg: Message) -> None:
        if not self.exists or self.state.get("recording_started"):
            return
        await self.commit([("recording.started", {"user_id": msg.data.get("user_id")})])

    async def on_recording_finished(self, msg: Message) -> None:
        if not self.exists:
            return
        tracks = msg.data["tracks"]
        customer = self.state.get("customer_id")
        top = next((t for t in tracks if t["user_id"] == customer), tracks[0])
        durations = [t["duration_s"] for t in tracks if t.get("duration_s") is not None]
        ready = {
            "url": top["url"],
            "sha256": top["sha256"],
            "bytes": top["bytes"],
            "duration_s": max(durations) if durations else None,
            "tracks": tracks,
        }
        await self.commit([("recording.ready", ready)])
        logger.info("session %s recording ready (%d files)", self.session_id, len(tracks))

    async def on_recording_failed(self, msg: Message) -> None:
        if not self.exists:
            return
        reason = msg.data.get("reason") or "unknown"
        if self.ctx.metrics is not None:
            self.ctx.metrics.recorder_failures.inc()
        await self.commit(
            [("recording.failed", {"reason": reason, "tracks": msg.data.get("tracks") or []})]
        )
        logger.warning("session %s recording failed: %s", self.session_id, reason)

    async def on_video_start(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        settings = self.ctx.settings
        reply: dict[str, Any] = {
            "provider": settings.video_provider,
            "ice_servers": settings.ice_server_list,
            # With webrtc, each party also sends its media to the server's
            # recorder peer (signal with to: "recorder").
            "recorder": self.ctx.media is not None and settings.recording != "off",
        }
        if self.state["state"] == L.VIDEO_IN_PROGRESS:
            if self.ctx.video is not None:  # rejoining: a fresh token
                reply["room_name"] = self.session_id
                reply["token"] = self.ctx.video.token(self.session_id, caller.user_id)
            return Reply(reply)  # rejoining the call: same answer, no new event
        self._in_state(L.ENP_ASSIGNED)
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
        video = self.ctx.video
        if video is not None:
            try:
                reply["room"] = await video.create_room(self.session_id)
            except Exception as exc:
                logger.error("twilio room for %s not created: %s", self.session_id, exc)
                raise ProtocolError(
                    "unavailable", "could not create the video room, try again"
                ) from None
            reply["room_name"] = self.session_id
            reply["token"] = video.token(self.session_id, caller.user_id)
        stored_reply = {k: v for k, v in reply.items() if k != "token"}
        await self._commit_request(
            msg,
            [self._move(L.VIDEO_IN_PROGRESS, caller.user_id, recorder=reply["recorder"])],
            stored_reply,
        )
        self._notify(L.VIDEO_IN_PROGRESS)
        # The customer learns how to take part (ICE servers, whether the recorder
        # is on, its own Twilio token): an ephemeral event to it alone, since it
        # may carry credentials that must not be journaled.
        customer_id = self.state["customer_id"]
        self.publish_ephemeral(
            self.actor_id, "video.config", self._video_config(customer_id), to_user=customer_id
        )
        return Reply(reply)

    def _video_config(self, user_id: str) -> dict[str, Any]:
        settings = self.ctx.settings
        config: dict[str, Any] = {
            "provider": settings.video_provider,
            "ice_servers": settings.ice_server_list,
            "recorder": self.ctx.media is not None and settings.recording != "off",
        }
        if self.ctx.video is not None:
            config["room_name"] = self.session_id
            config["token"] = self.ctx.video.token(self.session_id, user_id)
        return config

    async def on_checks_record(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._in_state(L.VIDEO_IN_PROGRESS)
        d = msg.data
        await self._commit_request(
            msg,
            [
                (
                    "checks.recorded",
                    {
                        "comprehension_confirmed": d["comprehension_confirmed"],
                        "duress_check_passed": d["duress_check_passed"],
                        "by": caller.user_id,
                    },
                )
            ],
            {},
        )
        return Reply({})

    def _check_location(self, caller: Caller) -> None:
        """A caller whose declared place is outside the allowed countries is
        refused first (`forbidden` precedes `conflict`)."""
        loc = self.state["participants"][caller.user_id].get("location") or {}
        country = loc.get("country")
        if country is not None and country.upper() not in self.ctx.settings.allowed_country_set:
            raise ProtocolError(
                "forbidden",
                f"parties must be in {self.ctx.settings.allowed_countries}"
                f" during the act; your location says {country}",
            )

    def _check_all_locations(self, caller: Caller) -> None:
        """For the act itself, every party must have declared where they are
        (`session.join` location.country), in an allowed country."""
        allowed = self.ctx.settings.allowed_country_set
        for uid, p in self.state["participants"].items():
            who = "your" if uid == caller.user_id else f"the {p['role']}'s"
            country = (p.get("location") or {}).get("country")
            if country is None:
                raise ProtocolError(
                    "forbidden",
                    f"{who} location is not declared: send session.join with"
                    " location {lat, lng, country} before the act",
                )
            if country.upper() not in allowed:
                raise ProtocolError(
                    "forbidden",
                    f"parties must be in {self.ctx.settings.allowed_countries}"
                    f" during the act; {who} location says {country}",
                )

    async def on_act_sign(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer")
        self._check_location(caller)
        self._in_state(L.VIDEO_IN_PROGRESS)
        if self.state["signed"] is not None:
            raise ProtocolError("conflict", "the act is already signed")
        self._check_all_locations(caller)
        await self._commit_request(
            msg,
            [("act.signed", {"user_id": caller.user_id, "signature": msg.data["signature"]})],
            {},
        )
        return Reply({})

    async def on_act_seal(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._check_location(caller)
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
        await self._commit_request(
            msg,
            [
                (
                    "act.sealed",
                    {
                        "user_id": caller.user_id,
                        "signature": msg.data["signature"],
                        "seal": msg.data["seal"],
                    },
                )
            ],
            {},
        )
        return Reply({})

    async def on_video_end(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "enp")
        self._in_state(L.VIDEO_IN_PROGRESS)
        await self._commit_request(msg, [self._move(L.VIDEO_COMPLETED, caller.user_id)], {})
        if self.ctx.media is not None:
            self.ctx.media.finish(self.session_id)
        if self.ctx.video is not None:
            await self.ctx.video.end_room(self.session_id)
        return Reply({})

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
        """NOTARIZING → NOTARIZED: the record of the act is issued."""
        if self.state["state"] != L.NOTARIZING:
            return
        at = now_iso()
        keys = self.ctx.keys
        envelope = build_envelope(
            self.state,
            self.session_id,
            at=at,
            journal_seq=self.seq,
            journal_head=self.head_hash,
            keys=keys,
            retention_years=self.ctx.settings.retention_years,
        )
        signed = keys.signer.sign(envelope)
        envelope_id = envelope["uid"]
        await self.commit(
            [
                self._move(L.NOTARIZED, "system"),
                ("session.notarized", {"envelope_id": envelope_id}),
            ],
            statements=[
                envelope_statement(signed, self.session_id, keys),
                book_entry(
                    self.state,
                    self.session_id,
                    at=at,
                    complete=True,
                    reason=None,
                    pii=keys.pii,
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
        recipients = [
            {
                "channel": r["channel"],
                "to": pii.seal(r["to"], self.session_id),
                "hint": mask(r["to"]),
            }
            for r in msg.data["recipients"]
        ]
        events = [self._move(L.DISTRIBUTING, caller.user_id, recipients=recipients)]
        if not recipients:
            events.append(
                ("session.state", {"state": L.COMPLETED, "prev": L.DISTRIBUTING, "by": "system"})
            )
            logger.info("session %s state %s -> %s", self.session_id, L.DISTRIBUTING, L.COMPLETED)
        await self._commit_request(msg, events, {})
        self._after_move()
        if self.state["state"] == L.DISTRIBUTING:
            self.set_timer(
                "deliveries", self.ctx.settings.delivery_resync_s, Message("sync_deliveries")
            )
        return Reply({})

    async def on_delivery_result(self, msg: Message) -> None:
        """From the delivery worker: one recipient's delivery is final."""
        await self._delivery_results([msg.data])

    async def _delivery_results(self, results: list[dict[str, Any]]) -> None:
        if self.state["state"] != L.DISTRIBUTING:
            return
        recipients = self.state.get("recipients") or []
        done = dict(self.state.get("deliveries") or {})
        events: list[tuple[str, dict[str, Any]]] = []
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
        if self.state["state"] == L.DISTRIBUTING:
            self.set_timer(
                "deliveries", self.ctx.settings.delivery_resync_s, Message("sync_deliveries")
            )

    async def _sync_deliveries(self) -> None:
        """Outcomes the worker recorded but the session has not journaled yet."""
        rows = await self.ctx.pool.fetch(
            "SELECT id, recipient, status, last_error FROM outbox WHERE session_id = $1"
            " AND recipient IS NOT NULL AND status <> 'pending' ORDER BY n",
            self.session_id,
        )
        await self._delivery_results(
            [
                {
                    "recipient": r["recipient"],
                    "delivery_id": r["id"],
                    "status": "delivered" if r["status"] == "delivered" else "dead_letter",
                    "reason": r["last_error"] if r["status"] == "dead" else None,
                }
                for r in rows
            ]
        )

    async def on_session_cancel(self, msg: Message) -> Reply:
        caller = self._require(msg.caller, "customer", "enp", "admin")
        if self.state["state"] not in L.CANCELLABLE:
            raise ProtocolError("conflict", f"cannot cancel in state {self.state['state']}")
        reason = msg.data["reason"]
        await self.commit(
            [self._move(L.CANCELLED, caller.user_id, reason=reason)],
            caller=msg.caller,
            request=(msg.kind, msg.data),
            reply=Reply({}),
            statements=self._incomplete_act(reason),
        )
        self._after_move()
        return Reply({})

    def _incomplete_act(self, reason: str) -> list[tuple[str, tuple[Any, ...]]]:
        """A session ending without the act after a notary was assigned gets an
        incomplete-act entry in that notary's book."""
        if not self.state.get("enp_id"):
            return []
        return [
            book_entry(
                self.state,
                self.session_id,
                at=now_iso(),
                complete=False,
                reason=reason,
                pii=self.ctx.keys.pii,
            )
        ]

    async def on_snapshot(self, msg: Message) -> dict[str, Any]:
        self._require(msg.caller, "customer", "enp", "admin")
        return self.snapshot_view()

    # -- internal messages ----------------------------------------------------

    async def on_assign(self, msg: Message) -> dict[str, Any]:
        """From the NotaryActor that holds the accepted offer."""
        d = msg.data
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
            ]
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

    def _start_grace(self, uid: str) -> None:
        self.set_timer(
            f"grace:{uid}",
            self.ctx.settings.reconnect_grace_s,
            Message("grace_expired", {"user_id": uid}),
        )

    async def on_grace_expired(self, msg: Message) -> None:
        uid = msg.data["user_id"]
        p = self.state["participants"].get(uid)
        if self.conns.get(uid) or not p or not p["present"]:
            return
        await self.commit([("participant.left", {"user_id": uid, "role": p["role"]})])

    async def on_activate(self) -> None:
        await super().on_activate()
        if self.state["state"] == L.DISTRIBUTING:
            self.set_timer("deliveries", 0, Message("sync_deliveries"))
        for uid, p in self.state["participants"].items():
            if p["present"] and self.state["state"] not in L.TERMINAL:
                self._start_grace(uid)

    def _track(self, caller: Caller) -> None:
        if caller.connection_id and caller.role != "admin":
            self.conns.setdefault(caller.user_id, set()).add(caller.connection_id)


def _matching_request(s: dict[str, Any]) -> dict[str, Any]:
    req = s.get("request") or {}
    return {
        "customer_id": s.get("customer_id"),
        "document_type": (s.get("document") or {}).get("type"),
        "price_preference": req.get("price_preference"),
        "location": req.get("location"),
        "preferred_notary_id": req.get("preferred_notary_id"),
        "created_at": s.get("created_at"),
    }


__all__ = ["SessionActor"]

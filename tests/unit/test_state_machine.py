"""A rule-based state machine over the session, notary and matchmaker actors
(issue 17): every request by every role (customers, notaries, admin, strangers),
drops, re-joins, timers; after every step, against the contract's model
(state_model.py, notary_model.py): one outcome per request, with the code the
model names; accepted only where the model allows (state, full view, seal);
journals gapless and hash-chained; one notary per session, one active session
and one open offer per notary, offers only to available notaries for REQUESTED
sessions, none waiting while a notary is free; snapshots as modelled; only §5's
moves; no ERROR. What it found: test_state_machine_regressions.py.

Own loop and database per run; fixed budget, printed seed; `ENF_SM_SEED=<seed>`
reproduces a run (a failure prints `@reproduce_failure` too), ENF_SM_EXAMPLES=<n>
runs longer; known server bugs (state_model.KNOWN_BUGS) are tolerated where listed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, event, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from actors.bus import LocalBus
from actors.kinds import ACTOR_KINDS
from actors.localhost import LocalHost
from core.errors import ProtocolError
from core.ids import MATCHMAKER, notary_address, session_address, session_id_for
from core.messages import Message, Reply
from gateway.metrics import Metrics
from persistence.journal import Journal
from persistence.keys import Keys
from persistence.migrate import apply_migrations
from persistence.pool import create_pool
from tests.conftest import _admin, _with_database
from tests.unit import state_model as M
from tests.unit.conftest import Rig, document, unit_settings
from tests.unit.notary_model import NotaryModel, expect_notary, free_for, holds
from tests.unit.state_model import ADMIN, CUSTOMERS, NOTARIES, ROLE, SENDERS, SLOTS, session_data

SEED = int(os.environ.get("ENF_SM_SEED", "20261202"))
EXAMPLES = int(os.environ.get("ENF_SM_EXAMPLES", "30"))
STEP_S = 10.0


class ActorsMachine(RuleBasedStateMachine):
    admin_dsn = "postgresql://postgres@127.0.0.1:5432/test"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="enf-sm-"))
        self.keys = Keys.load(None, None, self.tmp)
        self.loop = asyncio.new_event_loop()
        self.db = f"enf_sm_{uuid.uuid4().hex[:12]}"
        self.sessions: dict[tuple[str, str], M.SessionModel] = {}
        self.notaries = {n: NotaryModel(n) for n in NOTARIES}
        self.excluded: dict[str, set[str]] = {}
        self.seen_offers: list[str] = []
        self.read = 0  # deliveries of the inbox already replayed
        self.errors = BufferingHandler(10_000)  # ERROR records: none expected
        self.errors.setLevel(logging.ERROR)
        logging.getLogger().addHandler(self.errors)
        self.run(self._start())

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        await _admin(self.admin_dsn, f'CREATE DATABASE "{self.db}"')
        self.pool = await create_pool(_with_database(self.admin_dsn, self.db), max_size=10)
        async with self.pool.acquire() as conn:
            await apply_migrations(conn)
        s = unit_settings(self.tmp, offer_timeout_s=3600, reconnect_grace_s=3600)
        self.journal = Journal(self.pool, writers=s.journal_writers, max_batch=s.journal_max_batch)
        await self.journal.start()
        bus = LocalBus()
        self.host = LocalHost(s, self.journal, bus, ACTOR_KINDS, self.keys, metrics=Metrics())
        await self.host.start()
        self.rig = Rig(self.host, self.journal, bus, Metrics())
        for n in NOTARIES:
            await self.rig.put_notary(n)
            self.rig.inbox.follow(notary_address(n))

    async def _stop(self) -> None:
        await self.host.stop()
        await self.journal.stop()
        await asyncio.wait_for(self.pool.close(), 10)
        await _admin(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def teardown(self) -> None:
        try:
            self.run(self._stop())
            self.run(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            logging.getLogger().removeHandler(self.errors)
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def _ask(self, address: str, kind: str, data: dict[str, Any], user: str) -> Any:
        """Exactly one outcome within STEP_S, and the system settled after it."""
        # Every request comes with a fresh token: a party back in a paused
        # call has verified its identity again (iat after it left).
        caller = self.rig.caller(user, ROLE[user], iat=time.time() + 1)  # type: ignore[arg-type]
        try:
            out: Any = await asyncio.wait_for(
                self.host.ask(address, Message(kind, data, caller)), STEP_S
            )
        except ProtocolError as exc:
            out = exc
        await self._settle()
        return out

    async def _settle(self) -> None:
        """Until no actor has work, 3 times a loop turn apart (0 s timers fire)."""
        quiet = 0
        deadline = self.loop.time() + STEP_S
        while quiet < 3:
            assert self.loop.time() < deadline, "the actors never settled"
            await asyncio.sleep(0.001)
            cells = [c for s in self.host.shards for c in s.cells.values()]
            busy = any(c._task is not None or c.depth for c in cells)
            quiet = 0 if busy else quiet + 1

    def _judge(self, what: str, expected: M.Expected, out: Any) -> bool:
        """Accepted? Fails on any outcome the contract does not name."""
        event(f"{what.split()[0]}: {getattr(out, 'code', 'ok')}")
        if isinstance(out, ProtocolError):
            assert out.code in M.CODES, f"{what}: code {out.code} is not the contract's"
            code = expected.code if isinstance(expected, M.Either) else expected
            assert out.code == code, f"{what}: refused {out.code} ({out.message}), model {code}"
            return False
        assert isinstance(out, Reply), f"{what}: not a reply: {out!r}"
        if isinstance(expected, M.Either):
            event(f"known bug: {expected.bug}")
        else:
            assert expected is None, f"{what}: accepted, but the contract says {expected}"
        return True

    def do_session(self, kind: str, slot: tuple[str, str], user: str, data: dict[str, Any]) -> None:
        s = self.sessions.get(slot)
        sid = s.sid if s else session_id_for(*slot)
        expected = M.expect(kind, s, user, ROLE[user], data)
        out = self.run(self._ask(session_address(sid), kind, {"session_id": sid, **data}, user))
        if self._judge(f"{kind} by {user} on {slot} in {s and s.state}", expected, out):
            assert s is not None
            M.apply(kind, s, user, ROLE[user], data)
            n = self.notaries.get(s.enp or "")
            if s.state in M.RELEASED and n is not None and n.active == s.sid:
                n.active, n.accepted = None, {}

    def do_request(self, slot: tuple[str, str], doc: int) -> None:
        customer, key = slot
        sid = session_id_for(customer, key)
        s = self.sessions.get(slot)
        expected = None if s is None or s.document == doc else "conflict"
        data = {"idempotency_key": key, "document": document(doc)}
        self.rig.inbox.follow(session_address(sid))
        out = self.run(self._ask(session_address(sid), "session.request", data, customer))
        if not self._judge(f"session.request {slot} doc {doc}", expected, out):
            return
        assert out.data == {"session_id": sid, "state": s.state if s else "REQUESTED"}
        if s is None:
            s = self.sessions[slot] = M.SessionModel(sid, customer, doc)
            s.present[customer] = False
        s.connected.add(customer)
        M.back_in_the_call(s)

    def do_notary(self, kind: str, nid: str, data: dict[str, Any]) -> None:
        n = self.notaries[nid]
        expected, offer = expect_notary(kind, n, data)
        out = self.run(self._ask(notary_address(nid), kind, data, nid))
        if not self._judge(f"{kind} by {nid} ({data})", expected, out):
            return
        if kind == "presence.online":
            n.online, n.connected = True, True
        elif kind == "presence.set":
            n.preference = data["status"]
        elif kind == "presence.offline":
            n.online = False
        elif kind == "offer.accept" and offer is not None:
            s = self._by_sid(offer["session_id"])
            assert s.state == "REQUESTED" and s.enp is None, s
            s.state, s.enp, s.present[n.nid] = "ENP_ASSIGNED", n.nid, False
            n.offer, n.active, n.accepted = None, s.sid, {offer["offer_id"]: s.sid}
        if kind.startswith("presence.") and kind != "presence.offline":
            assert out.data["status"] == n.status(), (out.data, n)

    @rule(slot=st.sampled_from(SLOTS), doc=st.sampled_from([1, 1, 1, 2]))
    def request(self, slot: tuple[str, str], doc: int) -> None:
        self.do_request(slot, doc)

    @rule(kind=st.sampled_from([*sorted(SENDERS), "advance", "advance"]), data=st.data())
    def session_request(self, kind: str, data: st.DataObject) -> None:
        if kind == "advance":  # twice as likely as any other request
            return self.advance(data.draw(st.sampled_from(SLOTS)), data.draw(st.booleans()))
        live = [k for k, s in self.sessions.items() if s.state in M.CANCELLABLE - {"REQUESTED"}]
        pools = [SLOTS, live or SLOTS, live or SLOTS, sorted(self.sessions) or SLOTS]
        slot = data.draw(st.sampled_from(pools[data.draw(st.integers(0, 3))]), label="slot")
        user = data.draw(st.sampled_from(SENDERS[kind]), label="user")
        self.do_session(kind, slot, user, session_data(kind, data.draw))

    @rule(
        kind=st.sampled_from(["presence.online", "presence.offline", "presence.set"]),
        nid=st.sampled_from(NOTARIES),
        status=st.sampled_from(["available", "available", "away"]),
    )
    def presence(self, kind: str, nid: str, status: str) -> None:
        self.do_notary(kind, nid, {"status": status} if kind == "presence.set" else {})

    @rule(
        kind=st.sampled_from(["offer.accept", "offer.accept", "offer.decline"]),
        nid=st.sampled_from(NOTARIES),
        which=st.sampled_from(["held", "held", "seen", "unknown"]),
    )
    def answer_offer(self, kind: str, nid: str, which: str) -> None:
        seen = self.seen_offers[0] if self.seen_offers else None
        oid = {"held": self.notaries[nid].offer_id(), "seen": seen}.get(which)
        self.do_notary(kind, nid, {"offer_id": oid or "offer-unknown"})

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        """A party's connection closes; maybe the reconnect grace runs out."""
        if not self.sessions:
            return
        slot = data.draw(st.sampled_from(sorted(self.sessions)), label="slot")
        s = self.sessions[slot]
        user = data.draw(st.sampled_from([*s.parties(), *CUSTOMERS, *NOTARIES]), label="user")
        address = session_address(s.sid)
        conn = {"user_id": user, "connection_id": f"conn-{user}"}
        self.run(self._ask(address, "conn_closed", conn, user))
        s.connected.discard(user)
        if data.draw(st.booleans(), label="grace expires"):
            self.run(self._ask(address, "grace_expired", {"user_id": user}, user))
            M.left_the_call(s, user)  # participant.left (and during the call, a pause)

    @rule(
        slot=st.sampled_from(SLOTS),
        timer=st.sampled_from(
            [
                "request_expired",
                "finalize",
                "join_window_expired",
                "pause_expired",
                "recording_overdue",
            ]
        ),
    )
    def early_timer(self, slot: tuple[str, str], timer: str) -> None:  # fired early: no-op
        s = self.sessions.get(slot)
        if s is not None:
            self.run(self._ask(session_address(s.sid), timer, {}, ADMIN))

    @rule(nid=st.sampled_from(NOTARIES), grace=st.booleans())
    def notary_drop(self, nid: str, grace: bool) -> None:
        n, address = self.notaries[nid], notary_address(nid)
        self.run(self._ask(address, "conn_closed", {"connection_id": f"conn-{nid}"}, nid))
        n.connected = False
        if grace:
            self.run(self._ask(address, "grace_expired", {}, nid))
            n.online = False

    @rule(nid=st.sampled_from(NOTARIES))
    def offer_times_out(self, nid: str) -> None:
        offer = self.notaries[nid].offer
        if offer is not None:
            self.run(self._ask(MATCHMAKER, "offer_timeout", {"offer_id": offer["offer_id"]}, ADMIN))

    @rule(slot=st.sampled_from(SLOTS), rejoin=st.booleans(), steps=st.integers(1, 8))
    def advance(self, slot: tuple[str, str], rejoin: bool, steps: int = 1) -> None:
        """The next steps of the happy path (each checked), so runs reach the act."""
        for i in range(steps):
            if i:
                self.contract_holds()
            self._advance(slot, rejoin)

    def _advance(self, slot: tuple[str, str], rejoin: bool) -> None:
        s = self.sessions.get(slot)
        if s is None or s.state in M.TERMINAL:
            self.do_request(slot, s.document if s else 1)
        elif s.state == "REQUESTED":
            self._find_notary(s)
        else:
            step = M.next_step(s, rejoin)
            if step is not None:
                kind, user, data = step
                self.do_session(kind, slot, user, data)

    def _find_notary(self, s: M.SessionModel) -> None:
        holder = next((n for n in self.notaries.values() if holds(n, s.sid)), None)
        if holder is not None:
            self.do_notary("offer.accept", holder.nid, {"offer_id": holder.offer_id()})
            return
        idle = [n for n in self.notaries.values() if n.status() in ("offline", "away")]
        if idle:
            kind = "presence.set" if idle[0].online else "presence.online"
            self.do_notary(kind, idle[0].nid, {"status": "available"} if idle[0].online else {})

    # -- after every step -------------------------------------------------------------

    @invariant()
    def contract_holds(self) -> None:
        assert not self.errors.buffer, [r.getMessage() for r in self.errors.buffer]
        self.run(self._check())

    async def _check(self) -> None:
        self._replay()
        assert not (faults := await M.journal_faults(self.pool)), faults
        for s in self.sessions.values():
            view = await self.rig.snapshot(s.sid, ADMIN, "admin")
            got = (view["state"], view["enp_id"], view["signed"], view["sealed"])
            assert got == (s.state, s.enp, s.signed, s.sealed), (got, s)
            online = {p["user_id"]: p["online"] for p in view["participants"]}
            assert online == {u: u in s.connected for u in s.parties()}, (online, s)
        for n in self.notaries.values():
            actor: Any = self.host._cell(notary_address(n.nid)).actor
            got_n = (actor.online, actor.offer and actor.offer["offer_id"], actor.active_session)
            assert got_n == (n.online, n.offer_id(), n.active), (got_n, n)
        for s in self.sessions.values():
            free = free_for(s, self.notaries.values(), self.excluded.get(s.sid, set()))
            assert not free, f"{s.sid} waits for a notary while {free} are available"

    def _replay(self) -> None:
        """The events since the last step, in order: offers and moves."""
        new, self.read = self.rig.inbox.got[self.read :], len(self.rig.inbox.got)
        for d in new:
            name, data = d.event["name"], d.event["data"]
            if name == "session.state":
                assert data["state"] in M.TRANSITIONS.get(data["prev"], ()), data
            elif d.topic.startswith("notary:"):
                self._offer_event(self.notaries[d.topic.split(":", 1)[1]], name, data)
        for n in self.notaries.values():
            s = n.offer and self._by_sid(n.offer["session_id"])
            assert not s or s.state == "REQUESTED", f"{n.nid} holds an offer for {s}"

    def _offer_event(self, n: NotaryModel, name: str, data: dict[str, Any]) -> None:
        if name == "offer":
            assert n.status() == "available", f"offer to {n} not available: {data}"
            assert self._by_sid(data["session_id"]).state == "REQUESTED", data
            assert n.nid not in self.excluded.get(data["session_id"], set()), (n, data)
            n.offer = data
            self.seen_offers.append(data["offer_id"])
            return
        assert n.offer is not None and n.offer["offer_id"] == data["offer_id"], (n, name, data)
        n.offer = None
        if name == "offer.expired" or data.get("reason") == "declined":
            self.excluded.setdefault(data["session_id"], set()).add(n.nid)

    def _by_sid(self, sid: str) -> M.SessionModel:
        return next(s for s in self.sessions.values() if s.sid == sid)


def test_actors_keep_the_contract(pg_admin_dsn: str) -> None:
    ActorsMachine.admin_dsn = pg_admin_dsn
    print(f"state machine seed {SEED} (ENF_SM_SEED={SEED} reproduces this run)")
    run_state_machine_as_test(
        seed(SEED)(ActorsMachine),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=40,
            deadline=None,
            database=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow],
            # Not `explain`: its tracer calls os.path.abspath inside the loop (blockbuster).
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        ),
    )

"""The contract's model of sessions (PROTOCOL §4, §5, §8; notaries: notary_model.py)
for test_state_machine.py: `expect(...)` is a request's outcome by the contract,
`None` (accepted) or the code of its refusal, in the contract's order
(`not_found`, `forbidden` for places, `conflict` for state); `Either` where a
known server bug (KNOWN_BUGS, each with a strict xfail regression) differs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.unit.conftest import CONSENT, PH

# The lifecycle as PROTOCOL §5 draws it (not the server's own table).
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"REQUESTED"}),
    "REQUESTED": frozenset({"ENP_ASSIGNED", "CANCELLED", "FAILED"}),
    "ENP_ASSIGNED": frozenset({"VIDEO_IN_PROGRESS", "CANCELLED", "FAILED"}),
    "VIDEO_IN_PROGRESS": frozenset({"VIDEO_COMPLETED", "CANCELLED", "FAILED"}),
    "VIDEO_COMPLETED": frozenset({"NOTARIZING", "CANCELLED", "FAILED"}),
    "NOTARIZING": frozenset({"NOTARIZED", "FAILED"}),
    "NOTARIZED": frozenset({"DISTRIBUTING", "FAILED"}),
    "DISTRIBUTING": frozenset({"COMPLETED", "FAILED"}),
}
TERMINAL = frozenset({"COMPLETED", "CANCELLED", "FAILED"})
RELEASED = frozenset({"NOTARIZED", "DISTRIBUTING", "COMPLETED", "CANCELLED", "FAILED"})
CANCELLABLE = frozenset({"REQUESTED", "ENP_ASSIGNED", "VIDEO_IN_PROGRESS", "VIDEO_COMPLETED"})
CODES = ("bad_request", "forbidden", "not_found", "conflict")
ALLOWED_COUNTRIES = frozenset({"PH"})

# Server behaviour that breaks the contract, each pinned by a strict xfail
# regression in test_state_machine_regressions.py. While listed, the machine
# accepts either outcome at exactly that point and follows the server, to keep
# exploring; drop an entry once its regression passes (none is known today).
KNOWN_BUGS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Either:
    """The contract names `code`; known bug `bug` lets the server accept."""

    code: str
    bug: str


Expected = str | Either | None


def _bug(code: str, bug: str) -> Expected:
    """`code`, or either outcome while `bug` is a known one."""
    return Either(code, bug) if bug in KNOWN_BUGS else code


@dataclass
class SessionModel:
    sid: str
    customer: str
    document: int
    state: str = "REQUESTED"
    enp: str | None = None
    present: dict[str, bool] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    consent: dict[str, dict[str, bool]] = field(default_factory=dict)  # per party
    country: dict[str, str] = field(default_factory=dict)
    checks_ok: bool = False
    signed: bool = False
    sealed: bool = False
    # PROTOCOL §5: a party gone during the call pauses the act until every
    # party is back and connected.
    paused: bool = False

    def role_of(self, user: str, role: str) -> str | None:
        if user == self.customer and role == "customer":
            return "customer"
        if user == self.enp and role == "enp":
            return "enp"
        return "admin" if role == "admin" else None

    def parties(self) -> list[str]:
        return [self.customer] + ([self.enp] if self.enp else [])


# -- what the contract expects of each session request ---------------------------------


def _place(s: SessionModel, user: str) -> str | None:
    """forbidden when `user` declared a place outside the allowed countries."""
    c = s.country.get(user)
    return "forbidden" if c is not None and c not in ALLOWED_COUNTRIES else None


def _all_places(s: SessionModel) -> str | None:
    """forbidden unless every party declared an allowed place (the act)."""
    ok = all(s.country.get(u) in ALLOWED_COUNTRIES for u in s.parties())
    return None if ok else "forbidden"


def _full_view(s: SessionModel, caller: str) -> Expected:
    """The act's steps need the act not paused, both parties joined and (the
    other one: the caller is on the line) connected."""
    whole = all(s.present.get(u) for u in s.parties()) and all(
        u == caller or u in s.connected for u in s.parties()
    )
    return None if whole and not s.paused else "conflict"


def left_the_call(s: SessionModel, user: str) -> None:
    """participant.left: during the call, the act pauses."""
    if s.state in TERMINAL or not s.present.get(user):
        return
    s.present[user] = False
    if s.state == "VIDEO_IN_PROGRESS":
        s.paused = True


def back_in_the_call(s: SessionModel) -> None:
    """session.resumed once every party is joined and connected again."""
    if s.paused and all(s.present.get(u) and u in s.connected for u in s.parties()):
        s.paused = False


def _in(s: SessionModel, *states: str) -> str | None:
    return None if s.state in states else "conflict"


def first(*checks: Expected) -> Expected:
    return next((c for c in checks if c is not None), None)


def expect_join(s: SessionModel, user: str, role: str, data: dict[str, Any]) -> Expected:
    if role == "admin" or s.state in TERMINAL:
        return None
    consent = data.get("consent")
    given = s.consent.get(user, {})
    if consent is not None and any(v and not consent.get(k, v) for k, v in given.items()):
        return "conflict"
    return None


def expect_video_start(s: SessionModel) -> Expected:
    if s.state == "VIDEO_IN_PROGRESS":
        return None
    ready = all(s.present.get(u) for u in s.parties()) and all(
        s.consent.get(s.customer, {}).get(k) for k in ("recording", "privacy")
    )
    return first(_in(s, "ENP_ASSIGNED"), None if ready else "conflict")


def expect_sign(s: SessionModel, user: str) -> Expected:
    return first(
        _place(s, user),
        _in(s, "VIDEO_IN_PROGRESS"),
        "conflict" if s.signed else None,
        _all_places(s),
        _full_view(s, user),
    )


def expect_seal(s: SessionModel, user: str) -> Expected:
    return first(
        _place(s, user),
        _in(s, "VIDEO_IN_PROGRESS"),
        None if s.checks_ok else "conflict",
        None if s.signed else "conflict",
        "conflict" if s.sealed else None,
        _all_places(s),
        _full_view(s, user),
    )


def expect_cancel(s: SessionModel) -> Expected:
    if s.state not in CANCELLABLE:
        return "conflict"
    # PROTOCOL §5: cancelled "before act.seal was accepted"; after it, conflict.
    return "conflict" if s.sealed else None


# Who may send a session request (PROTOCOL §4 "who"); outside the session, not_found.
PARTIES: dict[str, tuple[str, ...]] = {
    "session.join": ("customer", "enp", "admin"),
    "session.leave": ("customer", "enp"),
    "video.start": ("enp",),
    "checks.record": ("enp",),
    "act.sign": ("customer",),
    "act.seal": ("enp",),
    "video.end": ("enp",),
    "session.notarize": ("enp",),
    "session.distribute": ("customer", "enp"),
    "session.cancel": ("customer", "enp", "admin"),
}


def expect(
    kind: str, s: SessionModel | None, user: str, role: str, data: dict[str, Any]
) -> Expected:
    """The contract's outcome of session request `kind` by `user` (as `role`)."""
    if s is None:
        return "not_found"
    in_role = s.role_of(user, role)
    if in_role not in PARTIES[kind]:
        return "not_found"
    rules: dict[str, Any] = {
        "session.join": lambda: expect_join(s, user, in_role, data),
        "session.leave": lambda: None,
        "video.start": lambda: expect_video_start(s),
        "checks.record": lambda: first(_in(s, "VIDEO_IN_PROGRESS"), _full_view(s, user)),
        "act.sign": lambda: expect_sign(s, user),
        "act.seal": lambda: expect_seal(s, user),
        "video.end": lambda: first(
            _in(s, "VIDEO_IN_PROGRESS"), "conflict" if s.paused and not s.sealed else None
        ),
        "session.notarize": lambda: first(
            _in(s, "VIDEO_COMPLETED"), None if s.signed and s.sealed else "conflict"
        ),
        "session.distribute": lambda: _in(s, "NOTARIZED"),
        "session.cancel": lambda: expect_cancel(s),
    }
    outcome: Expected = rules[kind]()
    return outcome


# -- what an accepted request does to the model ---------------------------------------------


def _joined(s: SessionModel, user: str, role: str, data: dict[str, Any]) -> None:
    if role == "admin" or s.state in TERMINAL:
        return
    s.present[user] = True
    s.connected.add(user)
    if data.get("consent") is not None:
        s.consent[user] = {**s.consent.get(user, {}), **data["consent"]}
    if data.get("location") is not None:
        s.country[user] = data["location"]["country"]
    back_in_the_call(s)


def _left(s: SessionModel, user: str) -> None:
    s.connected.discard(user)
    left_the_call(s, user)


def apply(kind: str, s: SessionModel, user: str, role: str, data: dict[str, Any]) -> None:
    """The accepted request's effect on the model."""
    if kind == "session.join":
        _joined(s, user, s.role_of(user, role) or role, data)
    elif kind == "session.leave":
        _left(s, user)
    elif kind == "video.start":
        s.state = "VIDEO_IN_PROGRESS"
    elif kind == "checks.record":
        s.checks_ok = bool(data["comprehension_confirmed"] and data["duress_check_passed"])
    elif kind == "act.sign":
        s.signed = True
    elif kind == "act.seal":
        s.sealed = True
    elif kind == "video.end":
        s.state = "VIDEO_COMPLETED"
    elif kind == "session.notarize":
        s.state = "NOTARIZED"  # NOTARIZING replies, then the 0 s finalize timer
    elif kind == "session.distribute":
        s.state = "COMPLETED"  # no recipients: DISTRIBUTING, then COMPLETED at once
    elif kind == "session.cancel":
        s.state = "CANCELLED"


def _join_step(s: SessionModel, user: str) -> tuple[str, str, dict[str, Any]]:
    data: dict[str, Any] = {"location": {"lat": 14.5995, "lng": 120.9842, "country": "PH"}}
    if user == s.customer:
        data["consent"] = {"recording": True, "privacy": True}
    return "session.join", user, data


def next_step(s: SessionModel, rejoin: bool) -> tuple[str, str, dict[str, Any]] | None:
    """The happy path's next request for an assigned session (None: nothing to
    do); without `rejoin`, the act goes on even if a party is away."""
    assert s.enp is not None
    away = [
        u
        for u in s.parties()
        if s.country.get(u) != "PH"
        or (
            (rejoin or s.state == "ENP_ASSIGNED") and (not s.present.get(u) or u not in s.connected)
        )
    ]
    if s.state in ("ENP_ASSIGNED", "VIDEO_IN_PROGRESS") and away:
        return _join_step(s, away[0])
    if s.state == "ENP_ASSIGNED":
        if not all(s.consent.get(s.customer, {}).get(k) for k in ("recording", "privacy")):
            return _join_step(s, s.customer)
        return "video.start", s.enp, {}
    if s.state == "VIDEO_IN_PROGRESS":
        return _act_step(s)
    return {
        "VIDEO_COMPLETED": ("session.notarize", s.enp, {}),
        "NOTARIZED": ("session.distribute", s.customer, {"recipients": []}),
    }.get(s.state)


def _act_step(s: SessionModel) -> tuple[str, str, dict[str, Any]]:
    assert s.enp is not None
    if not s.checks_ok:
        return (
            "checks.record",
            s.enp,
            {"comprehension_confirmed": True, "duress_check_passed": True},
        )
    if not s.signed:
        return "act.sign", s.customer, {"signature": "c2lnbmF0dXJl"}
    if not s.sealed:
        return "act.seal", s.enp, {"signature": "ZW5wLXNpZw==", "seal": "c2VhbA=="}
    return "video.end", s.enp, {}


# -- the cast and the requests they send -------------------------------------------------

CUSTOMERS, NOTARIES, ADMIN = ("c1", "c2"), ("n1", "n2"), "a1"
ROLE = {"c1": "customer", "c2": "customer", "n1": "enp", "n2": "enp", ADMIN: "admin"}
SLOTS = (("c1", "k1"), ("c1", "k2"), ("c2", "k1"))
# Who the gateway lets send each session request (PROTOCOL §4 "who"; PARTIES).
SENDERS = {kind: tuple(u for u, r in ROLE.items() if r in rs) for kind, rs in PARTIES.items()}
US: dict[str, Any] = {"lat": 40.7, "lng": -74.0, "country": "US"}


def session_data(kind: str, draw: Any) -> dict[str, Any]:
    """The data of a well-formed session request (the gateway checked the shape)."""
    if kind == "session.join":
        consent = draw(st.sampled_from([None, CONSENT, {"recording": True, "privacy": False}]))
        location = draw(st.sampled_from([None, PH, PH, US]))
        return {"consent": consent, "location": location}
    if kind == "checks.record":
        ok = st.sampled_from([True, True, False])
        return {"comprehension_confirmed": draw(ok), "duress_check_passed": draw(ok)}
    extra: dict[str, dict[str, Any]] = {
        "act.sign": {"signature": "c2lnbmF0dXJl"},
        "act.seal": {"signature": "ZW5wLXNpZw==", "seal": "c2VhbA=="},
        "session.distribute": {"recipients": []},
        "session.cancel": {"reason": "changed_mind"},
    }
    return dict(extra.get(kind, {}))


async def journal_faults(pool: Any) -> list[dict[str, Any]]:
    """Journals with a gap or a broken hash chain; two active sessions of a
    notary; two open offers of a notary or of a session."""
    faults: list[Any] = await pool.fetch(
        "SELECT actor_id, count(*) AS n, min(seq) AS low, max(seq) AS top FROM journal"
        " GROUP BY actor_id HAVING count(*) <> max(seq) OR min(seq) <> 1"
    )
    faults += await pool.fetch(
        "SELECT a.actor_id, a.seq FROM journal a JOIN journal b ON a.actor_id = b.actor_id"
        " AND b.seq = a.seq - 1 WHERE a.prev_hash <> b.hash"
    )
    faults += await pool.fetch(
        "SELECT 'notary' AS who, enp_id AS id FROM sessions WHERE enp_id IS NOT NULL"
        " AND NOT state = ANY($1::text[]) GROUP BY enp_id HAVING count(*) > 1"
        " UNION ALL SELECT 'offers of notary', notary_id FROM offers WHERE state = 'open'"
        " GROUP BY notary_id HAVING count(*) > 1"
        " UNION ALL SELECT 'offers of session', session_id FROM offers WHERE state = 'open'"
        " GROUP BY session_id HAVING count(*) > 1",
        sorted(RELEASED),
    )
    return [dict(r) for r in faults]

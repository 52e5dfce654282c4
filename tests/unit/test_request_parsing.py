"""The hand-written fast path for hot request types gives exactly what the
pydantic models give — same clean data and actor, or same error — on valid
and invalid input alike."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from core.errors import ProtocolError
from core.messages import Role
from gateway.auth import Identity
from gateway.requests import REQUESTS, parse, parse_with_model

SID = "0ada666e-d635-5c58-a410-7ed97dfa2e0c"
SESSION_IDS: list[Any] = [
    SID,
    SID.upper(),
    "{" + SID + "}",
    SID.replace("-", ""),
    "not-a-uuid",
    "",
    "a" * 600,
    "x\x00",
    None,
    7,
    True,
    [SID],
]
SEQS: list[Any] = [None, 0, 5, -1, True, False, 1.0, "3", 2**70]
BOOLS: list[Any] = [True, False, 1, 0, "true", None]


def outcome(fn: Any, kind: str, data: dict[str, Any], ident: Identity) -> Any:
    try:
        if fn is parse_with_model:
            _, clean, actor = fn(REQUESTS[kind], kind, data, ident)
        else:
            _, clean, actor = fn(kind, data, ident)
        return ("ok", clean, actor)
    except ProtocolError as exc:
        return ("error", exc.code, exc.message)


def join_inputs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sid, seq in itertools.product(SESSION_IDS, SEQS):
        data: dict[str, Any] = {"session_id": sid}
        if seq is not None:
            data["since_seq"] = seq
        out.append(data)
    out += [
        {},
        {"since_seq": 1},
        {"session_id": SID, "extra": 1},
        {"session_id": SID, "consent": {"recording": True}},
        {"session_id": SID, "location": {"lat": 1.0, "lng": 2.0, "country": "PH"}},
        {"session_id": SID, "since_seq": None},
    ]
    return out


def checks_inputs() -> list[dict[str, Any]]:
    out = [
        {"session_id": sid, "comprehension_confirmed": a, "duress_check_passed": b}
        for sid, a, b in itertools.product(SESSION_IDS[:5], BOOLS, BOOLS)
    ]
    out += [
        {"session_id": SID, "comprehension_confirmed": True},
        {"session_id": SID, "comprehension_confirmed": True, "duress_check_passed": True, "x": 1},
        {},
    ]
    return out


@pytest.mark.parametrize("role", ["customer", "enp", "admin"])
def test_fast_path_matches_the_models(role: Role) -> None:
    ident = Identity("u1", role, kyc_verified=True)
    cases = [("session.join", d) for d in join_inputs()]
    cases += [("checks.record", d) for d in checks_inputs()]
    for kind in ("video.start", "video.end", "session.notarize"):
        cases += [(kind, d) for d in join_inputs()]
    accepted = 0
    for kind, data in cases:
        fast = outcome(parse, kind, dict(data), ident)
        model = outcome(parse_with_model, kind, dict(data), ident)
        assert fast == model, (kind, data)
        accepted += fast[0] == "ok"
    assert accepted > 10  # the comparison covered accepted input, not only errors


def test_the_fast_path_takes_the_hot_shapes() -> None:
    from gateway.requests import _FAST

    assert _FAST["session.join"]({"session_id": SID, "since_seq": 3}) == {
        "session_id": SID,
        "since_seq": 3,
    }
    assert _FAST["session.join"]({"session_id": SID, "consent": {}}) is None
    checks = {"session_id": SID, "comprehension_confirmed": True, "duress_check_passed": False}
    assert _FAST["checks.record"](checks) == checks
    for kind in ("video.start", "video.end", "session.notarize"):
        assert _FAST[kind]({"session_id": SID}) == {"session_id": SID}
        assert _FAST[kind]({"session_id": SID, "since_seq": 1}) is None

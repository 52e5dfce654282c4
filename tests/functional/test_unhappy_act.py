"""The unhappy half of the act (issue 14, PROTOCOL §5) against the real
server: the act steps only in full view, pause and resume with the absent
party's identity verified again, FAILED party_lost with its legal record
(also when the server is killed during the pause), and each refusal's code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from enf_client import EnfClient

from tests.conftest import MakeServer
from tests.flows import (
    ADMIN,
    PH,
    assert_gapless,
    assigned_session,
    call_under_way,
    days_from_now,
    distribute_to_completion,
    end_and_notarize,
    get_json,
    in_the_call,
    passed_checks,
    put_notary,
    session_events,
)
from tests.served import Served
from tests.server_process import ServerProcess, server_env

SEAL = {"signature": "ZW5w", "seal": "c2VhbA=="}


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until the server's answer says so (for what no event announces)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not true after {timeout} s"
        await asyncio.sleep(0.05)


async def online(h: Served, sid: str, user_id: str) -> bool:
    """Whether the session sees `user_id` connected (the admin's snapshot)."""
    status, snap = await get_json(h, f"/v1/sessions/{sid}", h.token(ADMIN, "admin"))
    assert status == 200, snap
    return any(p["user_id"] == user_id and p["online"] for p in snap["participants"])


async def refused(c: EnfClient, kind: str, data: dict[str, Any], code: str) -> str:
    r = await c.request(kind, data)
    assert not r["ok"] and r["error"]["code"] == code, r
    return str(r["error"]["message"])


def names(c: EnfClient, sid: str) -> list[str]:
    return [e["name"] for e in session_events(c, sid)]


async def test_a_customer_lost_after_signing_pauses_the_act_until_it_proves_who_it_is(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=0.5)
    customer, notary, sid = await call_under_way(h)
    await notary.call("checks.record", passed_checks(sid))
    await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
    await notary.expect("act.signed")
    await customer.close()
    await until(lambda: _not(online(h, sid, "c1")))
    # At once, within the grace: the customer is not in the call.
    message = await refused(notary, "act.seal", {"session_id": sid, **SEAL}, "conflict")
    assert "customer is not connected" in message
    paused = await notary.expect("session.paused", timeout=10)
    assert paused["data"] == {"reason": "party_left", "user_id": "c1"}
    message = await refused(notary, "act.seal", {"session_id": sid, **SEAL}, "conflict")
    assert "paused" in message and "customer left the call" in message
    # A token from before the pause: identity not verified again.
    stale = await h.client("c1", "customer", iat=int(time.time()) - 30)
    await refused(stale, "session.join", {"session_id": sid}, "forbidden")
    fresh = await h.client("c1", "customer", iat=int(time.time()) + 2)
    await fresh.call("session.join", {"session_id": sid, "since_seq": 0, "location": PH})
    await notary.expect("session.resumed")
    await fresh.expect("session.resumed")
    # The signature given before the pause stands: the seal goes through.
    await notary.call("act.seal", {"session_id": sid, **SEAL})
    await end_and_notarize(fresh, notary, sid)
    await distribute_to_completion(fresh, notary, sid)
    for c in (fresh, notary):
        assert_gapless(session_events(c, sid), session_events(c, sid)[0]["seq"])
    assert session_events(fresh, sid)[0]["seq"] == 1
    assert names(fresh, sid).count("act.signed") == 1


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_a_drop_within_the_grace_needs_no_new_token_and_no_pause(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=30)
    customer, notary, sid = await assigned_session(h)
    token = customer.token
    await in_the_call(customer, notary, sid)
    await notary.call("checks.record", passed_checks(sid))
    last = session_events(customer, sid)[-1]["seq"]
    await customer.close()
    await until(lambda: _not(online(h, sid, "c1")))
    await refused(notary, "checks.record", passed_checks(sid), "conflict")
    again = EnfClient(h.ws_url, token)  # the same token, issued before the drop
    h.every_client.append(again)
    await again.connect()
    h.clients.append(again)
    await again.call("session.join", {"session_id": sid, "since_seq": last})
    await again.call("act.sign", {"session_id": sid, "signature": "c2ln"})
    await notary.call("act.seal", {"session_id": sid, **SEAL})
    await end_and_notarize(again, notary, sid)
    assert "session.paused" not in names(notary, sid) + names(again, sid)
    assert_gapless(session_events(again, sid), last + 1)


async def test_a_party_that_never_comes_back_fails_the_act_with_its_record(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=0.2, pause_timeout_s=1.0)
    customer, notary, sid = await call_under_way(h)
    await customer.close()
    await notary.expect("session.paused", reason="party_left")
    failed = await notary.expect("session.state", state="FAILED", timeout=10)
    assert (failed["data"]["reason"], failed["data"]["by"]) == ("party_lost", "system")
    told = await notary.expect("notification", kind="act_failed")
    assert told["data"]["session_id"] == sid
    # The customer, back later, finds the act failed and why.
    later = await h.client("c1", "customer", iat=int(time.time()) + 2)
    snap = (await later.call("session.join", {"session_id": sid, "since_seq": 0}))["session"]
    assert (snap["state"], snap["reason"]) == ("FAILED", "party_lost")
    await later.expect("session.state", state="FAILED")
    await _assert_incomplete_act_and_refund(h, sid, "party_lost", snap["created_at"][:7])


async def _assert_incomplete_act_and_refund(
    h: Served, sid: str, reason: str, month: str, ended: str = "session.failed"
) -> None:
    admin = h.token(ADMIN, "admin")
    status, book = await get_json(h, f"/v1/notaries/n1/book?month={month}&format=json", admin)
    assert status == 200, book
    entry = next(e for e in book["entries"] if e["session_id"] == sid)
    assert entry["complete"] is False and entry["incomplete_reason"] == reason
    status, out = await get_json(h, f"/v1/deliveries?session_id={sid}", admin)
    assert status == 200, out
    kinds = {d["type"]: d["payload"]["data"] for d in out["deliveries"]}
    assert kinds["payment.refund"]["amount"] == kinds["payment.hold"]["amount"]
    assert kinds["payment.refund"]["reason"] == reason
    assert kinds[ended]["reason"] == reason


async def test_refusals_of_the_unhappy_half(make_server: MakeServer) -> None:
    h = await make_server(reconnect_grace_s=0.2)
    customer, notary, sid = await call_under_way(h)
    await notary.call("checks.record", passed_checks(sid))
    # The notary dropped: the customer may not sign (not in full view).
    await notary.close()
    await until(lambda: _not(online(h, sid, "n1")))
    sign = {"session_id": sid, "signature": "c2ln"}
    assert "notary is not connected" in await refused(customer, "act.sign", sign, "conflict")
    # Away past the grace: paused; signing while paused is refused too.
    await customer.expect("session.paused", user_id="n1")
    assert "paused" in await refused(customer, "act.sign", sign, "conflict")
    # Back with an expired commission: signing goes on, but not the seal.
    await put_notary(h, "n1", commission_expires=days_from_now(-1))
    notary = await h.client("n1", "enp", iat=int(time.time()) + 2)
    await notary.call("session.join", {"session_id": sid, "location": PH})
    await customer.expect("session.resumed")
    await customer.call("act.sign", sign)
    message = await refused(notary, "act.seal", {"session_id": sid, **SEAL}, "forbidden")
    assert "commission has expired" in message
    # Renewed: sealed; and a sealed act cannot be cancelled.
    await put_notary(h, "n1", commission_expires=days_from_now(365))
    await notary.call("act.seal", {"session_id": sid, **SEAL})
    cancel = {"session_id": sid, "reason": "changed my mind"}
    await refused(customer, "session.cancel", cancel, "conflict")


async def test_video_end_is_refused_while_an_unsealed_act_is_paused(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=0.2)
    customer, notary, sid = await call_under_way(h)
    await customer.call("session.leave", {"session_id": sid})
    await notary.expect("session.paused", user_id="c1")  # leaving pauses at once
    assert "paused" in await refused(notary, "video.end", {"session_id": sid}, "conflict")
    await notary.call("session.cancel", {"session_id": sid, "reason": "customer left"})
    state = await notary.expect("session.state", state="CANCELLED")
    assert state["data"]["reason"] == "customer left"


# -- across a SIGKILL of the server ------------------------------------------------------


async def _served(database: str, tmp_path: Path, **env: str) -> ServerProcess:
    server = ServerProcess(
        server_env(database, tmp_path, ENF_LOG_FORMAT="json", **env), tmp_path / "server.log"
    )
    await server.start()
    await put_notary(server, "n1", name="Atty. One", tariff=300.0, rating=4.5)
    return server


async def _with_token(h: Served, token: str | None) -> EnfClient:
    c = EnfClient(h.ws_url, token)
    h.every_client.append(c)
    await c.connect()
    h.clients.append(c)
    return c


async def test_a_server_killed_mid_act_resumes_with_the_old_tokens_and_no_pause(
    database: str, tmp_path: Path
) -> None:
    h = await _served(database, tmp_path, ENF_RECONNECT_GRACE_S="30")
    try:
        customer, notary, sid = await assigned_session(h)
        tokens = customer.token, notary.token
        await in_the_call(customer, notary, sid)
        await notary.call("checks.record", passed_checks(sid))
        await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
        seen = [session_events(c, sid)[-1]["seq"] for c in (customer, notary)]
        await h.crash_and_restart()
        customer, notary = [await _with_token(h, t) for t in tokens]
        for c, last in zip((customer, notary), seen, strict=True):
            await c.call("session.join", {"session_id": sid, "since_seq": last})
        await notary.call("act.seal", {"session_id": sid, **SEAL})
        await end_and_notarize(customer, notary, sid)
        for c, last in zip((customer, notary), seen, strict=True):
            assert "session.paused" not in names(c, sid)
            assert_gapless(session_events(c, sid), last + 1)
    finally:
        await h.close()


async def test_the_pause_timeout_survives_a_server_kill(database: str, tmp_path: Path) -> None:
    h = await _served(database, tmp_path, ENF_RECONNECT_GRACE_S="0.3", ENF_PAUSE_TIMEOUT_S="3")
    try:
        customer, notary, sid = await assigned_session(h)
        await in_the_call(customer, notary, sid)
        await customer.close()
        paused = await notary.expect("session.paused", user_id="c1", timeout=10)
        await h.crash_and_restart()
        # Nobody comes back: the timer, armed again from the journaled pause, fails it.
        notary = await h.client("n1", "enp", iat=int(time.time()) + 2)
        await notary.call("session.join", {"session_id": sid, "since_seq": paused["seq"]})
        failed = await notary.expect("session.state", state="FAILED", timeout=15)
        assert failed["data"]["reason"] == "party_lost"
        month = failed["at"][:7]
        await _assert_incomplete_act_and_refund(h, sid, "party_lost", month)
        assert not await asyncio.to_thread(h.error_lines)
    finally:
        await h.close()


async def test_the_join_window_survives_a_server_kill(database: str, tmp_path: Path) -> None:
    h = await _served(database, tmp_path, ENF_JOIN_WINDOW_S="3")
    try:
        customer, _notary, sid = await assigned_session(h)
        seen = session_events(customer, sid)[-1]["seq"]
        await h.crash_and_restart()
        # Nobody starts the call: the window, armed again from the journaled
        # assignment, cancels the session.
        customer = await h.client("c1", "customer")
        since = {"session_id": sid, "since_seq": seen}
        await customer.call("session.join", since)
        cancelled = await customer.expect("session.state", state="CANCELLED", timeout=15)
        assert (cancelled["data"]["reason"], cancelled["data"]["by"]) == ("join_window", "system")
        month = cancelled["at"][:7]
        await _assert_incomplete_act_and_refund(h, sid, "join_window", month, "session.cancelled")
    finally:
        await h.close()

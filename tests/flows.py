"""Steps shared by the functional tests: a client's view of the contract."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from enf_client import EnfClient
from yarl import URL

from tests.served import Served

ADMIN = "admin-1"

# Appended to the idempotency keys of `request_session`, so that the session
# ids (derived from customer and key) differ from test to test. Empty but in
# tests/cluster, where Redis's pub/sub channels (not per database) are shared
# by every test and every run on the machine; there a per-test suffix
# (tests/cluster/conftest.py).
KEY_SUFFIX = ""


def days_from_now(days: int) -> str:
    """A date (YYYY-MM-DD) `days` from today (UTC): a date that stays in the
    future (or past) whenever the tests run."""
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


# A commission that has years to run.
COMMISSION_EXPIRES_DAYS = 5 * 365

# The happy path's states, in order (PROTOCOL §5).
HAPPY_STATES = [
    "REQUESTED",
    "ENP_ASSIGNED",
    "VIDEO_IN_PROGRESS",
    "VIDEO_COMPLETED",
    "NOTARIZING",
    "NOTARIZED",
    "DISTRIBUTING",
    "COMPLETED",
]


# A declared place in the Philippines, for session.join.
PH: dict[str, Any] = {"lat": 14.5995, "lng": 120.9842, "country": "PH"}
# Two places for matching by distance (about 570 km apart).
MANILA: dict[str, float] = {"lat": 14.5995, "lng": 120.9842}
CEBU: dict[str, float] = {"lat": 10.3157, "lng": 123.8854}

# A principal's personal data: what must never be stored or logged in clear.
NAME = "Maria Clara Santos"
ADDRESS = "123 Rizal Avenue, Makati City"
ID_NUMBER = "N01-23-456789"
PHONE = "+639171234567"


async def eventually(
    predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.05
) -> None:
    """Wait until `predicate()` holds (for state that no event announces)."""
    for _ in range(int(timeout / every)):
        if predicate():
            return
        await asyncio.sleep(every)
    assert predicate(), f"not true after {timeout} s"


def doc(n: int = 1, type_: str = "affidavit") -> dict[str, Any]:
    return {
        "id": f"doc-{n}",
        "sha256": hashlib.sha256(f"document {n}".encode()).hexdigest(),
        "type": type_,
        "title": f"Affidavit of loss #{n}",
    }


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of `token`."""
    return {"Authorization": f"Bearer {token}"}


async def http_call(
    h: Served,
    method: str,
    path: str,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    content_type: str | None = None,
    **kw: Any,
) -> tuple[int, Any]:
    """`method path` on `h` (or an absolute URL, a link the server handed
    out), the path exactly as written (percent-escapes kept), with `token`
    (if any) as the bearer; `kw` goes to aiohttp (`json=`, `data=`). The
    status and the body: parsed JSON when it is JSON, else the text; with
    `content_type`, the answer must have that one. The one HTTP helper of
    the tests (a download of bytes reads them with aiohttp itself)."""
    headers = {**(bearer(token) if token else {}), **(headers or {})}
    absolute = path.startswith(("http://", "https://"))
    url = URL(path if absolute else h.base_url + path, encoded=True)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, **kw) as r,
    ):
        if content_type is not None:
            assert r.content_type == content_type, (r.status, r.content_type)
        text = await r.text()
        if r.content_type == "application/json" or text[:1] in ("{", "["):
            try:
                return r.status, json.loads(text)
            except ValueError:
                pass
        return r.status, text


async def get_json(h: Served, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET `path` (with `token`, if any): the status and the JSON body."""
    return await http_call(h, "GET", path, token)


async def put_notary(h: Served, notary_id: str, **profile: Any) -> None:
    body = {
        "name": f"Atty. {notary_id}",
        "license_number": f"LIC-{notary_id}",
        "commission_expires": days_from_now(COMMISSION_EXPIRES_DAYS),
        "rating": 4.0,
        "tariff": 500.0,
        "specializations": ["affidavit"],
        "avg_response_time_s": 30.0,
        **profile,
    }
    status, answer = await http_call(
        h, "PUT", f"/v1/notaries/{notary_id}", h.token(ADMIN, "admin"), json=body
    )
    assert status == 200, answer


async def online_notary(
    h: Served, notary_id: str, codec: str = "json", **profile: Any
) -> EnfClient:
    await put_notary(h, notary_id, **profile)
    n = await h.client(notary_id, "enp", codec=codec)
    assert (await n.call("presence.online"))["status"] == "available"
    return n


def user_id(c: EnfClient) -> str:
    """Who `c` is connected as (its welcome's user id)."""
    assert c.welcome is not None, "not connected"
    uid: str = c.welcome["user_id"]
    return uid


def session_events(c: EnfClient, session_id: str) -> list[dict[str, Any]]:
    return [e for e in c.events if e.get("topic") == f"session:{session_id}" and "seq" in e]


def assert_gapless(events: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), seqs


async def request_session(customer: EnfClient, key: str = "k", n: int = 1) -> str:
    """`session.request` of document `n` under idempotency key `key` (plus
    `KEY_SUFFIX`); the session id."""
    body = {"idempotency_key": key + KEY_SUFFIX, "document": doc(n)}
    reply = await customer.call("session.request", body)
    sid: str = reply["session_id"]
    return sid


async def accept_next_offer(
    notary: EnfClient, customer: EnfClient, timeout: float = 10.0
) -> dict[str, Any]:
    """The notary accepts the next offer it gets; the customer sees ENP_ASSIGNED.
    Returns the offer."""
    offer = await notary.expect("offer", timeout=timeout)
    await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    await customer.expect("session.state", state="ENP_ASSIGNED")
    return offer


async def join_both(customer: EnfClient, notary: EnfClient, sid: str) -> None:
    """Both parties join from the Philippines; the customer consents to
    recording and privacy (what video.start and the act need)."""
    await customer.call(
        "session.join",
        {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH},
    )
    await notary.call("session.join", {"session_id": sid, "location": PH})


def passed_checks(sid: str) -> dict[str, Any]:
    """`checks.record` data: comprehension confirmed, duress check passed."""
    return {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": True}


async def sign_and_seal(
    customer: EnfClient,
    notary: EnfClient,
    sid: str,
    *,
    signature: str = "c2ln",
    enp_signature: str = "ZQ==",
    seal: str = "cw==",
) -> None:
    """In the call: the notary records passed checks, the customer signs, the notary seals."""
    await notary.call("checks.record", passed_checks(sid))
    await customer.call("act.sign", {"session_id": sid, "signature": signature})
    await notary.call("act.seal", {"session_id": sid, "signature": enp_signature, "seal": seal})


async def in_the_call(customer: EnfClient, notary: EnfClient, sid: str) -> dict[str, Any]:
    """From ENP_ASSIGNED: both join (`join_both`), the notary starts the
    video, the customer sees VIDEO_IN_PROGRESS. The `video.start` reply."""
    await join_both(customer, notary, sid)
    video = await notary.call("video.start", {"session_id": sid})
    await customer.expect("session.state", state="VIDEO_IN_PROGRESS")
    return video


async def end_and_notarize(customer: EnfClient, notary: EnfClient, sid: str) -> dict[str, Any]:
    """The notary ends the call and notarizes; the customer's session.notarized."""
    await notary.call("video.end", {"session_id": sid})
    await notary.call("session.notarize", {"session_id": sid})
    return await customer.expect("session.notarized")


async def distribute_to_completion(customer: EnfClient, notary: EnfClient, sid: str) -> None:
    """From NOTARIZED: distributed to nobody, both see COMPLETED."""
    await customer.call("session.distribute", {"session_id": sid, "recipients": []})
    await customer.expect("session.state", state="COMPLETED")
    await notary.expect("session.state", state="COMPLETED")


async def run_video_to_completion(customer: EnfClient, notary: EnfClient, sid: str) -> None:
    """From ENP_ASSIGNED (both connected) to COMPLETED."""
    await run_to_notarized(customer, notary, sid)
    await distribute_to_completion(customer, notary, sid)


async def run_to_notarized(customer: EnfClient, notary: EnfClient, sid: str) -> None:
    """From ENP_ASSIGNED (both connected) to NOTARIZED (ENF_RECORDING off or optional)."""
    video = await in_the_call(customer, notary, sid)
    assert video["provider"] == "webrtc"
    await sign_and_seal(
        customer,
        notary,
        sid,
        signature="c2lnbmF0dXJl",
        enp_signature="ZW5wLXNpZw==",
        seal="c2VhbA==",
    )
    notarized = await end_and_notarize(customer, notary, sid)
    assert notarized["data"]["envelope_id"]


async def assigned_session(h: Served) -> tuple[EnfClient, EnfClient, str]:
    """Notary n1 online, customer c1 requests, n1 accepts: (customer, notary, session id)."""
    notary = await online_notary(h, "n1")
    customer = await h.client("c1", "customer")
    sid = await request_session(customer)
    await accept_next_offer(notary, customer)
    return customer, notary, sid


async def call_under_way(h: Served) -> tuple[EnfClient, EnfClient, str]:
    """`assigned_session`, then `in_the_call`: the video is on, both joined."""
    customer, notary, sid = await assigned_session(h)
    await in_the_call(customer, notary, sid)
    return customer, notary, sid


async def assert_token_refused(server: Served, token: str) -> None:
    """Refused in the header (401 before the upgrade) and in `hello` (4401)."""
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.ws_url, headers=bearer(token))
        assert err.value.status == 401
        ws = await http.ws_connect(server.ws_url, protocols=("enf.v1.json",))
        await ws.send_str(json.dumps({"type": "hello", "data": {"token": token}}))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401

"""The web console's unhappy half of the act (PROTOCOL §5) in headless
Chromium (Debian's `chromium`), driven by Playwright: a party away past the
grace pauses the act (a banner naming who is missing and how to come back,
the act's buttons disabled) until it re-joins with a fresh token; a pause
past the pause timeout shows FAILED with its reason; the notary's page counts
the join window down, and shows a session cancelled when it runs out.

One page is in the browser, the other party is a Python client. Each step's
screenshot goes to test-artifacts/ (not committed). Chromium is required:
these tests never skip."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from enf_client import EnfClient, RequestFailed
from playwright.async_api import async_playwright, expect

from tests.chromium import launch
from tests.conftest import Harness, MakeServer
from tests.flows import PH, online_notary, put_notary, request_session
from tests.server_process import ROOT

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, WebSocketRoute

ARTIFACTS = ROOT / "test-artifacts"
# Where the customer says it is when it comes back (PROTOCOL §5's re-join).
BACK_IN_PH: dict[str, Any] = {"lat": 14.6, "lng": 121.0, "country": "PH"}
ACT_BUTTONS = ("#record-checks", "#seal")
# The first step of the act in the call (the seal waits for the checks and
# the signature: tests/functional/test_console_steps.py).
FIRST_STEP = "#record-checks"
WAIT_MS = 15_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    await asyncio.to_thread(ARTIFACTS.mkdir, exist_ok=True)
    async with async_playwright() as p:
        browser = await launch(p)
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"console-pause-{name}.png"), full_page=True)


class Network:
    """A page's WebSocket, through Playwright: refused while `away` (the
    page's network is gone), passed to the server otherwise."""

    def __init__(self) -> None:
        self.away = False

    async def route(self, ws: WebSocketRoute) -> None:
        if self.away:
            await ws.close(code=4000, reason="test: no network")
        else:
            ws.connect_to_server()


async def signed_in(
    browser: Browser, h: Harness, token: str, network: Network | None = None
) -> Page:
    page = await (await browser.new_context()).new_page()
    if network is not None:
        await page.route_web_socket("**/v1/ws", network.route)
    await page.goto(h.url("/"))
    await page.fill("#token", token)
    await page.click("#go")
    await expect(page.locator("#link")).to_have_text("online")
    return page


async def notary_page_assigned(browser: Browser, h: Harness) -> tuple[Page, EnfClient, str]:
    """Notary n1's page online; customer c1 (a Python client) requests, the
    page accepts: (the notary's page, the customer, the session id)."""
    await put_notary(h, "n1")
    notary = await signed_in(browser, h, h.token("n1", "enp", license_number="ENP-2026-001"))
    await notary.click("#online")
    await expect(notary.locator("#presence")).to_have_text("available")
    customer = await h.client("c1", "customer")
    sid = await request_session(customer)
    await notary.locator(".accept").click(timeout=WAIT_MS)
    await expect(notary.locator("#session-id")).to_have_text(sid)
    await customer.expect("session.state", state="ENP_ASSIGNED")
    return notary, customer, sid


async def notary_page_in_call(browser: Browser, h: Harness) -> tuple[Page, EnfClient, str]:
    """As `notary_page_assigned`, then the customer joins and the page starts the video."""
    notary, customer, sid = await notary_page_assigned(browser, h)
    await customer.call(
        "session.join",
        {"session_id": sid, "consent": {"recording": True, "privacy": True}, "location": PH},
    )
    await notary.click("#start-video")
    await expect(notary.locator("#state")).to_have_text("VIDEO_IN_PROGRESS", timeout=WAIT_MS)
    await expect(notary.locator(FIRST_STEP)).to_be_enabled()
    return notary, customer, sid


async def test_the_notary_page_shows_the_customer_away_and_back(make_server: MakeServer) -> None:
    h = await make_server(reconnect_grace_s=0.3)
    async with chromium() as browser:
        notary, customer, sid = await notary_page_in_call(browser, h)
        await expect(notary.locator("#paused-banner")).to_be_hidden()
        await shot(notary, "1-in-call")

        await customer.close()  # gone past the grace: the act pauses
        banner = notary.locator("#paused-banner")
        await expect(banner).to_be_visible(timeout=WAIT_MS)
        await expect(banner).to_contain_text("The act is paused")
        await expect(notary.locator("#paused-why")).to_have_text("the customer (c1) left the call.")
        await expect(notary.locator("#paused-hint")).to_contain_text(
            "Wait for the customer (c1) to reconnect"
        )
        await expect(notary.locator("#rejoin-box")).to_be_hidden()  # not the notary's to do
        for button in ACT_BUTTONS:
            await expect(notary.locator(button)).to_be_disabled()
        await expect(notary.locator(FIRST_STEP)).to_have_attribute(
            "title", re.compile("paused.*customer")
        )
        await shot(notary, "2-paused")

        # A token issued before the customer left does not bring it back.
        stale = await h.client("c1", "customer", iat=int(time.time()) - 5)
        with pytest.raises(RequestFailed) as refused:
            await stale.call("session.join", {"session_id": sid, "location": BACK_IN_PH})
        assert refused.value.code == "forbidden"
        await stale.close()
        await expect(banner).to_be_visible()

        # With a fresh one it does: the act resumes, the page clears.
        back = await h.client("c1", "customer", iat=int(time.time()) + 2)
        await back.call("session.join", {"session_id": sid, "location": BACK_IN_PH})
        await expect(banner).to_be_hidden(timeout=WAIT_MS)
        await expect(notary.locator(FIRST_STEP)).to_be_enabled()
        await expect(notary.locator(FIRST_STEP)).to_have_attribute("title", "")
        await expect(notary.locator("#log")).to_contain_text("session.resumed")
        await shot(notary, "3-resumed")

        # And the act goes on from the page.
        await notary.check("#comprehension")
        await notary.check("#duress")
        await notary.click("#record-checks")
        await expect(notary.locator("#log")).to_contain_text("checks.recorded")
        await expect(notary.locator("#error")).to_have_text("")


async def test_the_page_of_the_party_away_asks_for_a_fresh_token(make_server: MakeServer) -> None:
    h = await make_server(reconnect_grace_s=0.3)
    notary = await online_notary(h, "n1")
    async with chromium() as browser:
        network = Network()
        customer = await signed_in(browser, h, h.token("c1", "customer"), network)
        await customer.click("#request")
        await expect(customer.locator("#state")).to_have_text("REQUESTED")
        sid = await accept_next_offer_from_page(notary)
        await expect(customer.locator("#state")).to_have_text("ENP_ASSIGNED")
        await customer.check("#consent-recording")
        await customer.check("#consent-privacy")
        await customer.click("#join")
        await notary.expect("participant.joined", user_id="c1")
        await notary.call("session.join", {"session_id": sid, "location": PH})
        await notary.call("video.start", {"session_id": sid})
        await expect(customer.locator("#sign")).to_be_enabled(timeout=WAIT_MS)

        # The page's network is gone longer than the grace: it comes back
        # only after the pause, with its old token.
        network.away = True
        (conn,) = h.connections_of("c1")
        await conn.ws.close(code=1013, message=b"test: away past the grace")
        await notary.expect("session.paused", user_id="c1", timeout=WAIT_MS / 1000)
        network.away = False
        await customer.evaluate("enf.client.reconnect()")  # not waiting for the backoff
        banner = customer.locator("#paused-banner")
        await expect(banner).to_be_visible(timeout=WAIT_MS)
        await expect(customer.locator("#paused-why")).to_have_text("you left the call.")
        await expect(customer.locator("#paused-hint")).to_contain_text("Sign in again")
        await expect(customer.locator("#rejoin-box")).to_be_visible()
        await expect(customer.locator("#sign")).to_be_disabled()
        await shot(customer, "4-customer-away")

        await customer.fill("#fresh-token", h.token("c1", "customer", iat=int(time.time()) + 2))
        await customer.click("#rejoin")
        await notary.expect("session.resumed", timeout=WAIT_MS / 1000)
        await expect(banner).to_be_hidden(timeout=WAIT_MS)
        await expect(customer.locator("#sign")).to_be_enabled()
        await shot(customer, "5-customer-back")


async def accept_next_offer_from_page(notary: EnfClient) -> str:
    """The Python notary accepts the offer of the page's request: the session id."""
    offer = await notary.expect("offer", timeout=WAIT_MS / 1000)
    reply = await notary.call("offer.accept", {"offer_id": offer["data"]["offer_id"]})
    sid: str = reply["session_id"]
    return sid


async def test_a_failed_act_shows_why(make_server: MakeServer) -> None:
    h = await make_server(reconnect_grace_s=0.3, pause_timeout_s=1.0)
    async with chromium() as browser:
        notary, customer, _ = await notary_page_in_call(browser, h)
        await customer.close()  # and never back
        await expect(notary.locator("#paused-banner")).to_be_visible(timeout=WAIT_MS)
        await shot(notary, "6-paused-before-failing")
        ended = notary.locator("#ended-banner")
        await expect(ended).to_have_text(
            "FAILED: a party did not come back within the pause timeout.", timeout=WAIT_MS
        )
        await expect(notary.locator("#state")).to_have_text("FAILED")
        await expect(notary.locator("#paused-banner")).to_be_hidden()
        for button in ACT_BUTTONS:
            await expect(notary.locator(button)).to_be_disabled()
        await shot(notary, "7-failed")


async def test_the_notary_page_counts_the_join_window_down(make_server: MakeServer) -> None:
    h = await make_server(join_window_s=600)
    async with chromium() as browser:
        notary, _, _ = await notary_page_assigned(browser, h)
        window = notary.locator("#join-window")
        await expect(window).to_be_visible()
        await expect(window).to_have_text(
            re.compile(r"the call must start within (10:00|9:[0-5]\d) \(by \d\d:\d\d:\d\d UTC\)")
        )
        first = await window.inner_text()
        await expect(window).not_to_have_text(first, timeout=5_000)  # it runs
        for button in ACT_BUTTONS:
            await expect(notary.locator(button)).to_be_disabled()
        await shot(notary, "8-join-window")
        # The customer has not joined: the video cannot start, and says why.
        await expect(notary.locator("#start-video")).to_be_disabled()
        await expect(notary.locator("#start-video")).to_have_attribute(
            "title", "Not now: waiting for the customer to join"
        )
        await expect(window).to_be_visible()


async def test_a_session_cancelled_by_the_join_window_says_so(make_server: MakeServer) -> None:
    h = await make_server(join_window_s=1.5)
    async with chromium() as browser:
        notary, customer, _ = await notary_page_assigned(browser, h)
        await customer.expect("session.state", state="CANCELLED", timeout=WAIT_MS / 1000)
        await expect(notary.locator("#ended-banner")).to_have_text(
            "CANCELLED: the call did not start within the join window.", timeout=WAIT_MS
        )
        await expect(notary.locator("#join-window")).to_be_hidden()
        await shot(notary, "9-join-window-cancelled")

"""The web console in headless Chromium (Debian's `chromium`, fake camera and
microphone), driven by Playwright: a customer page and a notary page take a
session from request to NOTARIZED with real WebRTC and a recording; the
customer's socket is dropped midway and the page resumes by itself. Screenshots
of each page go to test-artifacts/ (not committed).

Skipped when Chromium is not installed (`apt install chromium`)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from playwright.async_api import async_playwright, expect

from tests.chromium import launch
from tests.conftest import MakeServer, wait_until
from tests.flows import eventually, http_call, put_notary
from tests.server_process import ROOT

if TYPE_CHECKING:
    from playwright.async_api import Page

ARTIFACTS = ROOT / "test-artifacts"


async def pages_state(*pages: Page) -> str:
    """What each page shows, for a failure message."""
    out = []
    for page in pages:
        error = await page.locator("#error").text_content()
        log = await page.locator("#log").inner_text()
        out.append(f"--- {page.url} error={error!r}\n{log[:3000]}")
    return "\n".join(out)


async def test_customer_and_notary_pages_run_a_whole_session(make_server: MakeServer) -> None:
    h = await make_server(recording="required")
    await put_notary(h, "n1", tariff=750.0)
    await asyncio.to_thread(ARTIFACTS.mkdir, exist_ok=True)
    async with async_playwright() as p:
        browser = await launch(p)
        try:
            notary = await (await browser.new_context()).new_page()
            customer = await (await browser.new_context()).new_page()
            for page, token in (
                (notary, h.token("n1", "enp", license_number="ENP-2026-001")),
                (customer, h.token("c1", "customer")),
            ):
                await page.goto(h.url("/"))
                await page.fill("#token", token)
                await page.click("#go")
                await expect(page.locator("#link")).to_have_text("online")
                # The console talks through the TypeScript SDK's bundle (clients/js).
                sdk = await page.evaluate(
                    "[enf.client.constructor.name, enf.client.stats.connections]"
                )
                assert sdk == ["EnfClient", 1], sdk
            await notary.click("#online")
            await expect(notary.locator("#presence")).to_have_text("available")

            await customer.fill("#principal-name", "Maria Clara Santos")
            await customer.click("#request")
            await expect(customer.locator("#state")).to_have_text("REQUESTED")
            await notary.locator(".accept").click(timeout=20_000)
            await expect(notary.locator("#session-controls")).to_be_visible()
            await expect(customer.locator("#state")).to_have_text("ENP_ASSIGNED")

            # The customer's socket drops: the page reconnects and resumes.
            conn = next(iter(h.connections_of("c1")))
            await conn.ws.close(code=1013, message=b"test: resume with since_seq")
            await eventually(lambda: any(c is not conn for c in h.connections_of("c1")), 15)
            await expect(customer.locator("#link")).to_have_text("online", timeout=15_000)

            await customer.check("#consent-recording")
            await customer.check("#consent-privacy")
            await customer.select_option("#country", "PH")
            await customer.click("#join")
            await expect(customer.locator("#log")).to_contain_text("you joined the session")

            await notary.click("#start-video")
            try:
                await expect(customer.locator("#state")).to_have_text(
                    "VIDEO_IN_PROGRESS", timeout=15_000
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{await pages_state(customer, notary)}") from None
            # The act needs the recording running for both (PROTOCOL §5, in full view).
            for party in ("c1", "n1"):
                await expect(notary.locator("#log")).to_contain_text(
                    re.compile(rf'recording\.started #\d+ \{{"user_id":"{party}"\}}'),
                    timeout=20_000,
                )
            # Both see the other's camera (peer to peer).
            for page in (customer, notary):
                await page.wait_for_function(
                    "document.getElementById('remote').videoWidth > 0", timeout=20_000
                )
            await notary.check("#comprehension")
            await notary.check("#duress")
            await notary.click("#record-checks")
            await expect(notary.locator("#log")).to_contain_text("checks.recorded")
            await expect(customer.locator("#sign")).to_be_enabled()
            await customer.click("#sign")
            await expect(notary.locator("#log")).to_contain_text("act.signed")
            await notary.click("#seal")
            await expect(customer.locator("#log")).to_contain_text("act.sealed")
            await customer.screenshot(path=str(ARTIFACTS / "console-customer-in-call.png"))
            await notary.screenshot(path=str(ARTIFACTS / "console-notary-in-call.png"))
            await notary.wait_for_timeout(2000)  # a little more of the call on record
            await notary.click("#end-video")
            await expect(notary.locator("#recording")).to_contain_text(
                "recording ready", timeout=60_000
            )
            await notary.click("#notarize")
            await expect(customer.locator("#envelope")).to_contain_text("ENF-", timeout=20_000)
            await customer.screenshot(path=str(ARTIFACTS / "console-customer-notarized.png"))
            await notary.screenshot(path=str(ARTIFACTS / "console-notary-notarized.png"))
            sid = (await notary.locator("#session-id").text_content() or "").strip()

            # The ops page shows the session and its journal.
            ops = await (await browser.new_context()).new_page()
            await ops.goto(h.url("/"))
            await ops.fill("#token", h.token("ops", "admin"))
            await ops.click("#go")
            await expect(ops.locator("#sessions")).to_contain_text(sid)
            await ops.fill("#journal-sid", sid)
            await ops.click("#journal")
            await expect(ops.locator("#journal-rows")).to_contain_text("session.notarized")
            await ops.screenshot(path=str(ARTIFACTS / "console-ops.png"))
        finally:
            await browser.close()

    status, snap = await http_call(h, "GET", f"/v1/sessions/{sid}", h.token("ops", "admin"))
    assert status == 200 and snap["state"] == "NOTARIZED" and snap["recording"]["bytes"] > 0
    shot = ARTIFACTS / "console-ops.png"
    await asyncio.to_thread(wait_until, shot.exists, 5, "the ops page's screenshot")

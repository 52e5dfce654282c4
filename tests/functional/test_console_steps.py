"""The console guides its people (issue 16), in headless Chromium (Debian's
`chromium`, fake camera and microphone) driven by Playwright against the
real server: at each step of a whole notarization, on the customer page and
the notary page, the steps possible now are enabled and those that are not
are disabled with the reason in their title; the Next line says what comes
next for that person; the timeline shows the session's events (its journal,
then live), pauses, resumptions, failures and cancellations marked; the ops
page shows the queue and sessions by state. A screenshot of each page at
each step goes to test-artifacts/<test>/. Chromium is required: these tests
never skip."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from playwright.async_api import async_playwright, expect

from tests.chromium import launch
from tests.console_steps import WAIT_MS, Shots, next_is, signed_in, steps, timeline_has
from tests.flows import http_call, put_notary
from tests.functional.test_console_pause import notary_page_assigned, notary_page_in_call

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

    from tests.conftest import Harness, MakeServer

ACT = ("record-checks", "seal", "end-video", "notarize")


async def ops_shows(ops: Page, **cells: str) -> None:
    """After a refresh, the ops page's cells (by id, `_` for `-`) say these."""
    await ops.click("#refresh")
    for cell, text in cells.items():
        await expect(ops.locator("#" + cell.replace("_", "-"))).to_have_text(text, timeout=WAIT_MS)


async def sessions_in(ops: Page, state: str, n: int) -> None:
    row = ops.locator(f'#by-state tr[data-key="{state}"] td').nth(1)
    await expect(row).to_have_text(str(n), timeout=WAIT_MS)


async def test_each_step_of_a_notarization_is_offered_only_when_possible(
    make_server: MakeServer,
) -> None:
    h = await make_server(recording="required")
    await put_notary(h, "n1", tariff=750.0)
    async with async_playwright() as p:
        browser = await launch(p)
        try:
            await _whole_notarization(h, browser)
        finally:
            await browser.close()


async def _whole_notarization(h: Harness, browser: Browser) -> None:
    ops = await signed_in(browser, h, h.token("ops", "admin"))
    customer = await signed_in(browser, h, h.token("c1", "customer"))
    notary = await signed_in(browser, h, h.token("n1", "enp", license_number="ENP-2026-001"))
    shots = Shots("console-steps", {"customer": customer, "notary": notary, "ops": ops})

    # Before anything: the customer may request; the notary may go online.
    await next_is(customer, "^Next: request a notarization")
    await steps(customer, enabled=("request",))
    await next_is(notary, "^Next: go online to receive offers")
    await steps(notary, enabled=("online",), waiting={"offline": "you are offline"})
    await steps(notary, waiting={"start-video": "accept an offer first"})
    await ops_shows(ops, q_waiting="0", q_notaries="none online", q_offers="0")
    await shots.take("start")

    # A request with no notary online: it waits, and the ops page says so.
    await customer.fill("#principal-name", "Maria Clara Santos")
    await customer.click("#request")
    await expect(customer.locator("#state")).to_have_text("REQUESTED")
    await next_is(customer, "^Next: wait for a notary to accept your request; meanwhile")
    await steps(
        customer,
        enabled=("join",),
        waiting={"request": "session under way", "sign": "no notary has accepted yet"},
    )
    await timeline_has(customer, "session.state", "^Requested")
    await ops_shows(ops, q_waiting="1", q_notaries="none online", q_offers="0")
    await expect(ops.locator("#q-hint")).to_contain_text("no notary is available")
    await sessions_in(ops, "REQUESTED", 1)
    await shots.take("requested")

    # The notary goes online: an offer, to accept or decline.
    await notary.click("#online")
    await expect(notary.locator("#presence")).to_have_text("available")
    await next_is(notary, "^Next: accept or decline the offer")
    await steps(notary, enabled=("offline",), waiting={"online": "you are online"})
    await expect(notary.locator(".accept")).to_be_enabled(timeout=WAIT_MS)
    await ops_shows(ops, q_waiting="1", q_offers="1", q_notaries="0 available, 1 busy, 0 away")
    await shots.take("offer")

    await notary.locator(".accept").click()
    await expect(notary.locator("#session-controls")).to_be_visible()
    await expect(customer.locator("#state")).to_have_text("ENP_ASSIGNED")
    await next_is(notary, "^Next: wait for the customer to join")
    await steps(
        notary,
        waiting={
            "start-video": "waiting for the customer to join",
            "record-checks": "start the video first",
            "seal": "start the video first",
            "end-video": "start the video first",
            "notarize": "only after the video call",
        },
    )
    await next_is(customer, "^Next: tick both consents .* and join the session")
    await steps(customer, enabled=("join",), waiting={"sign": "notary has not started it"})
    for page in (customer, notary):
        await timeline_has(page, "session.state", r"^Assigned to (you|the notary \(n1\)), 750 PHP")
    await timeline_has(notary, "participant.joined", "^you joined: in PH")
    await ops_shows(ops, q_waiting="0", q_offers="0")
    await expect(ops.locator("#q-latency")).to_contain_text("1 assignment(s)")
    await sessions_in(ops, "ENP_ASSIGNED", 1)
    await shots.take("assigned")

    # The customer consents and joins: the notary may start the video.
    await customer.check("#consent-recording")
    await customer.check("#consent-privacy")
    await customer.click("#join")
    await next_is(notary, r"^Next: start the video\.$")
    await steps(notary, enabled=("start-video",))
    await next_is(customer, "^Next: wait for the notary to start the video")
    await steps(customer, waiting={"join": "^Done: you have joined", "sign": "not started it"})
    await timeline_has(
        notary, "participant.joined", r"the customer \(c1\) joined: consented to recording"
    )
    await shots.take("joined")

    # The video: once recorded for both, the checks come first.
    await notary.click("#start-video")
    await expect(customer.locator("#state")).to_have_text("VIDEO_IN_PROGRESS", timeout=WAIT_MS)
    for party in ("c1", "n1"):
        who = "you" if party == "n1" else r"the customer \(c1\)"
        await timeline_has(notary, "recording.started", f"^Recording started for {who}")
    await next_is(
        notary, r"^Next: record the checks, then wait for the customer's signature, then seal\.$"
    )
    await steps(
        notary,
        enabled=("record-checks", "end-video"),
        waiting={
            "start-video": "^Done: the video is running",
            "seal": "record the comprehension and duress checks",
            "notarize": "end the video first",
        },
    )
    await next_is(customer, r"^Next: sign the document\.$")
    await steps(customer, enabled=("sign",), waiting={"join": "Done"})
    await shots.take("video")

    await notary.check("#comprehension")
    await notary.check("#duress")
    await notary.click("#record-checks")
    await next_is(notary, r"^Next: wait for the customer's signature, then seal\.$")
    await steps(
        notary,
        waiting={"record-checks": "^Done: both checks", "seal": "principal has not signed yet"},
    )
    await timeline_has(customer, "checks.recorded", "understands the document yes")
    await shots.take("checks")

    await customer.click("#sign")
    await next_is(customer, "^Next: wait for the notary to seal the act")
    await steps(customer, waiting={"sign": "^Done: you have signed"})
    await next_is(notary, r"^Next: seal the act\.$")
    await steps(notary, enabled=("seal",))
    await shots.take("signed")

    await notary.click("#seal")
    await next_is(notary, r"^Next: end the video\.$")
    await steps(
        notary,
        enabled=("end-video",),
        waiting={"seal": "^Done: the act is sealed", "record-checks": "the act is sealed"},
    )
    await next_is(customer, "^Next: wait for the notary to end the video and notarize")
    await timeline_has(customer, "act.sealed", r"^Sealed by the notary \(n1\)")
    await shots.take("sealed")

    await notary.click("#end-video")
    await expect(notary.locator("#state")).to_have_text("VIDEO_COMPLETED")
    await steps(notary, waiting={"end-video": "^Done", "start-video": "video call has ended"})
    await next_is(notary, r"^Next: notarize\.$")  # once the recording is ready
    await timeline_has(notary, "recording.ready", "^Recording ready")
    await steps(notary, enabled=("notarize",))
    await next_is(customer, "^Next: wait for the notary to notarize")
    await shots.take("video-ended")

    await notary.click("#notarize")
    await expect(customer.locator("#envelope")).to_contain_text("ENF-", timeout=WAIT_MS)
    # A notarized session: none of the act's steps is possible any more.
    await steps(
        notary,
        waiting={
            "start-video": "the session is notarized",
            "record-checks": "the session is notarized",
            "seal": "the session is notarized",
            "end-video": "the session is notarized",
            "notarize": "the session is notarized",
        },
    )
    await next_is(
        notary, r"^Done: the act is notarized \(envelope ENF-.*\)\. Next: wait for an offer"
    )
    await steps(customer, enabled=("request",), waiting={"sign": "notarized", "join": "notarized"})
    await next_is(customer, r"^Done: the document is notarized \(envelope ENF-")
    await timeline_has(customer, "session.notarized", "^Envelope ENF-.* issued")

    # Each page's timeline is the whole journal, once each, in order.
    sid = (await notary.locator("#session-id").text_content() or "").strip()
    status, journal = await http_call(
        h, "GET", f"/v1/sessions/{sid}/journal", h.token("c1", "customer")
    )
    assert status == 200
    seqs = [e["seq"] for e in journal["events"]]
    for page in (customer, notary):
        rows = page.locator("#timeline li")
        await expect(rows).to_have_count(len(seqs), timeout=WAIT_MS)
        assert [int(s) for s in await rows.evaluate_all("rs => rs.map(r => r.dataset.seq)")] == seqs

    await ops_shows(ops, q_waiting="0", q_offers="0")
    await sessions_in(ops, "NOTARIZED", 1)
    await sessions_in(ops, "REQUESTED", 0)
    await expect(ops.locator("#cluster-mode")).to_contain_text("Single node")
    await ops.fill("#journal-sid", sid)
    await ops.click("#journal")
    await expect(ops.locator('#journal-rows li[data-name="session.notarized"]')).to_contain_text(
        "Envelope ENF-"
    )
    await shots.take("notarized")


async def test_the_timeline_marks_pauses_resumptions_and_the_failure(
    make_server: MakeServer,
) -> None:
    h = await make_server(reconnect_grace_s=0.3, pause_timeout_s=4.0)
    async with async_playwright() as p:
        browser = await launch(p)
        try:
            notary, customer, sid = await notary_page_in_call(browser, h)
            shots = Shots("console-steps-pause", {"notary": notary})
            await next_is(notary, "^Next: record the checks")
            await shots.take("in-call")

            await customer.close()  # away past the grace: the act pauses
            await timeline_has(
                notary, "session.paused", r"^Paused: the customer \(c1\) left the call", "tl-pause"
            )
            await next_is(notary, r"^Next: wait for the customer \(c1\) to come back")
            await steps(
                notary,
                waiting={
                    "record-checks": r"the act is paused \(the customer \(c1\) left the call\)",
                    "seal": "record the comprehension and duress checks",
                    "end-video": "paused .* and not sealed",
                },
            )
            await shots.take("paused")

            back = await h.client("c1", "customer", iat=int(time.time()) + 2)
            await back.call("session.join", {"session_id": sid})
            await timeline_has(notary, "session.resumed", "^Resumed", "tl-resume")
            await next_is(notary, "^Next: record the checks")
            await steps(notary, enabled=("record-checks", "end-video"))
            await shots.take("resumed")

            await back.close()  # and never back: FAILED after the pause timeout
            await expect(notary.locator("#timeline li.tl-pause")).to_have_count(2, timeout=WAIT_MS)
            await timeline_has(
                notary,
                "session.state",
                "^FAILED: a party did not come back within the pause timeout",
                "tl-failed",
            )
            await next_is(notary, "^Over: the session is failed: a party did not come back")
            for button in (*ACT, "start-video"):
                await steps(notary, waiting={button: "the session is failed"})
            await shots.take("failed")
        finally:
            await browser.close()


async def test_a_cancelled_session_is_marked_in_the_timeline(make_server: MakeServer) -> None:
    h = await make_server(join_window_s=1.5)
    async with async_playwright() as p:
        browser = await launch(p)
        try:
            notary, _, _ = await notary_page_assigned(browser, h)
            shots = Shots("console-steps-cancelled", {"notary": notary})
            await timeline_has(
                notary,
                "session.state",
                "^CANCELLED: the call did not start within the join window",
                "tl-cancelled",
            )
            await next_is(notary, "^Over: the session is cancelled: the call did not start")
            await steps(notary, waiting={"start-video": "the session is cancelled"})
            await shots.take("cancelled")
        finally:
            await browser.close()

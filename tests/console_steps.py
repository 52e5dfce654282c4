"""What the browser tests of the console's steps share (tests/functional/
test_console_steps.py): signing a page in, asserting which steps a page
offers now (enabled) and which wait (disabled, the reason in the title), its
Next line and timeline, and a screenshot of each page at each step in
`test-artifacts/<test>/<nn>-<page>-<step>.png`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from playwright.async_api import expect

from tests.server_process import ROOT

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

    from tests.served import Served

ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 20_000


class Shots:
    """Screenshots of the pages at each step, numbered in order."""

    def __init__(self, test: str, pages: Mapping[str, Page]) -> None:
        self.dir = ARTIFACTS / test
        self.pages = pages
        self.n = 0

    async def take(self, step: str, *names: str) -> None:
        """A screenshot of each page named (every page when none is)."""
        await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)
        for name in names or tuple(self.pages):
            path = self.dir / f"{self.n:02d}-{name}-{step}.png"
            await self.pages[name].screenshot(path=str(path), full_page=True)
        self.n += 1


async def signed_in(browser: Browser, h: Served, token: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(h.url("/"))
    await page.fill("#token", token)
    await page.click("#go")
    await expect(page.locator("#link")).to_have_text("online")
    return page


async def steps(
    page: Page,
    enabled: tuple[str, ...] = (),
    waiting: Mapping[str, str] | None = None,
) -> None:
    """The buttons `enabled` (ids) are enabled with no reason; each of
    `waiting` is disabled, its title the reason matching the pattern."""
    for button in enabled:
        await expect(page.locator(f"#{button}")).to_be_enabled(timeout=WAIT_MS)
        await expect(page.locator(f"#{button}")).to_have_attribute("title", "")
    for button, reason in (waiting or {}).items():
        await expect(page.locator(f"#{button}")).to_be_disabled(timeout=WAIT_MS)
        await expect(page.locator(f"#{button}")).to_have_attribute(
            "title", re.compile(reason), timeout=WAIT_MS
        )


async def next_is(page: Page, text: str) -> None:
    """The Next line says `text` (a start of it, or a pattern)."""
    await expect(page.locator("#next")).to_have_text(re.compile(text), timeout=WAIT_MS)


async def timeline_has(page: Page, name: str, words: str, cls: str = "") -> None:
    """A timeline row of event `name` whose words match `words` (with the
    class `cls`, when given)."""
    selector = f'#timeline li[data-name="{name}"]' + (f".{cls}" if cls else "")
    said = page.locator(".tl-words").filter(has_text=re.compile(words))
    row = page.locator(selector).filter(has=said)
    await expect(row.first).to_be_visible(timeout=WAIT_MS)

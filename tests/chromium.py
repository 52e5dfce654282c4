"""Debian's Chromium for the browser tests, driven by Playwright: headless,
with a fake camera and microphone and no permission prompt."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser, Playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def launch(playwright: Playwright) -> Browser:
    """Chromium, or a failure: a browser test skipped for want of it would
    pass for what it never checked (`.ci/run` installs it)."""
    assert CHROMIUM is not None, "Debian's chromium is required (apt-get install chromium)"
    return await playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--no-sandbox",
        ],
    )

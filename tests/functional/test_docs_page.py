"""Issue 16: `/docs` in a real browser (Debian's Chromium, headless, through
Playwright): Swagger UI, served by the server itself, renders the OpenAPI
3.1 document with every operation, and the page asks nothing of any other
origin (no CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import Request, Route, async_playwright

from gateway.http.openapi import openapi_document
from tests.chromium import launch
from tests.conftest import Harness


async def test_swagger_ui_renders_every_operation_from_the_server_alone(
    server: Harness,
) -> None:
    operations = sum(len(item) for item in openapi_document()["paths"].values())
    ours = urlsplit(server.base_url).netloc
    asked: list[str] = []
    elsewhere: list[str] = []
    errors: list[str] = []

    async def only_ours(route: Route, request: Request) -> None:
        asked.append(request.url)
        if urlsplit(request.url).netloc != ours:
            elsewhere.append(request.url)
            await route.abort()
            return
        await route.continue_()

    async with async_playwright() as p:
        browser = await launch(p)
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.route("**/*", only_ours)
            await page.goto(server.url("/docs"))
            await page.wait_for_selector(".opblock", timeout=30_000)
            shown = await page.locator(".opblock").count()
            title = await page.locator(".info .title").inner_text()
            text = await page.locator("body").inner_text()
        finally:
            await browser.close()
    assert shown == operations, (shown, operations)
    assert "ENF session server" in title
    assert "Unable to render" not in text and not errors, errors
    assert not elsewhere, elsewhere
    assert server.url("/openapi.json") in asked
    assert server.url("/docs/static/swagger-ui-bundle.js") in asked

"""Fixtures of the web console's browser tests: the embedded stack serving the built console,
Debian's Chromium driven by Playwright (its own browser download is not reachable here), and
screenshots under var/screenshots (the folder `make test` prints)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from libs.cli.stack import Stack

CHROMIUM = os.environ.get("HEDDLE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
# Chromium's connections to Google's hosts are refused on this closed network: keep it quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

Screenshot = Callable[[str], Awaitable[Path]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def watched_page(
    browser: Browser,
    base_url: str,
    *,
    tolerate: str | None = None,
    viewport: tuple[int, int] = (1280, 800),
    timeout_ms: int = 15_000,
) -> AsyncIterator[Page]:
    """A page in a context of its own; the test fails if the page logs an error or throws.
    Console errors containing `tolerate` are let through: Chromium logs every failed request
    (a 422, a request made offline) as one, and some tests cause such requests on purpose."""
    context = await browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        base_url=base_url,
    )
    opened = await context.new_page()
    opened.set_default_timeout(timeout_ms)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and (tolerate is None or tolerate not in message.text):
            problems.append(f"console error: {message.text}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    try:
        yield opened
    finally:
        await context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
async def page(browser: Browser, stack: Stack) -> AsyncIterator[Page]:
    """A 1280x800 page on the console of a fresh embedded stack, signed in with the
    development key the embedded gateway offers to loopback callers. The test fails if the
    page logs an error or throws."""
    async with watched_page(browser, stack.gateway_url) as opened:
        yield opened


@pytest.fixture
def screenshot(page: Page, request: pytest.FixtureRequest) -> Screenshot:
    """`await screenshot("editor")` saves var/screenshots/<test>-editor.png."""

    async def take(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name}-{name}.png"
        await page.screenshot(path=str(path), full_page=False)
        return path

    return take

"""Debian's Chromium, driven by Playwright, as a real user's browser.

Never a browser download: Playwright drives the packaged /usr/bin/chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# What chromium needs to run headless as root in CI, without talking to anyone (../shared/design/testing.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed (with its Playwright driver) on the way out."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

"""QR codes read back the way a phone reads them: from pixels on a screen.

Chromium draws the page (the codes are SVG images in it), each code is
photographed as a screenshot, and Debian's ``zbarimg`` (zbar-tools) decodes
the picture.  Nothing here looks at the text the service encoded: a code
that is drawn wrong, too dense or cut off fails here as it would on a phone.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page

ZBARIMG = "/usr/bin/zbarimg"
# A laptop screen: the Android code is scanned by the phone from another device's display.
SCREEN = {"width": 1280, "height": 900}


@dataclass(frozen=True)
class ScannedCode:
    caption: str  # the text under the code, which says which device it is for
    alt: str
    payload: bytes


def scan_png(png: bytes) -> list[bytes]:
    """Every QR code zbarimg finds in the picture, as raw bytes (no charset conversion)."""
    with tempfile.TemporaryDirectory() as directory:
        picture = Path(directory) / "screen.png"
        picture.write_bytes(png)
        result = subprocess.run(
            [ZBARIMG, "--quiet", "--nodbus", "--raw", "-Sdisable", "-Sqrcode.enable", str(picture)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    if result.returncode == 4:  # zbarimg: the picture was read, and holds no code
        return []
    assert result.returncode == 0, result.stderr
    # One line per code; a payload never holds a raw newline (JSON escapes them in strings).
    return result.stdout.rstrip(b"\n").split(b"\n")


def scan_page(page: Page) -> list[ScannedCode]:
    """Each ``figure.qr`` on the page, photographed on its own and decoded."""
    codes = []
    for figure in page.locator("figure.qr").all():
        image = figure.locator("img")
        assert page.evaluate("i => i.complete && i.naturalWidth > 0", image.element_handle()), "the image loaded"
        found = scan_png(image.screenshot())
        assert len(found) == 1, f"one code in each picture, found {len(found)}"
        codes.append(ScannedCode(figure.locator("figcaption").inner_text(), image.get_attribute("alt") or "", found[0]))
    return codes


def scan_html(browser: Browser, html: str) -> list[ScannedCode]:
    """``html`` (a page the service answered) drawn by Chromium on a laptop-sized screen, its codes decoded."""
    context = browser.new_context(viewport=SCREEN, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_content(html, wait_until="load")
        return scan_page(page)
    finally:
        context.close()

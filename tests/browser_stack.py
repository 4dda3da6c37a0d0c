"""Headless Chromium over a locally started API and UI: what the browser test and docs/screenshots.py share.

Debian's /usr/bin/chromium (never a browser download), with the switches that keep it quiet and offline.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    """Until `url` answers 200; RuntimeError when `proc` (the server) exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def open_page(pw: Any, *, height: int, timeout_ms: int) -> tuple[Any, Any]:
    """(browser, page): a 1440-pixel-wide page in Debian's Chromium, waiting up to `timeout_ms` per action."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1440, "height": height})
    page.set_default_timeout(timeout_ms)
    return browser, page

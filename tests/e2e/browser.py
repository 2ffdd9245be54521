"""A storefront page on its own origin, and a real headless Chromium to open it, for the analytics.js tests.

The page and analytics.js (the npm package's UMD build, unchanged) are served from a loopback port of their
own, so every call to ingest is cross-origin exactly as on a store's site. The browser is Debian's chromium
driven by Playwright; nothing is downloaded. `EVIL_HOST` resolves to the same loopback address inside the
browser only, to play a site no store lists in its allowed_origins.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, async_playwright

from shared.settings import REPO_ROOT

JS_DIR = REPO_ROOT / "tests" / "js"
ANALYTICS_UMD = JS_DIR / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
CHROMIUM = Path("/usr/bin/chromium")
EVIL_HOST = "shop.evil.test"
# Flags that keep a headless Chromium quiet and self-contained on a machine without a display or network.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {EVIL_HOST} 127.0.0.1",
)


class _PageHandler(SimpleHTTPRequestHandler):
    """/store.html from tests/js/page, /analytics-next/* from the npm package's UMD build."""

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith("/analytics-next/"):
            return str(ANALYTICS_UMD / Path(clean.removeprefix("/analytics-next/")).name)
        return str(JS_DIR / "page" / Path(clean).name)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def page_server() -> Iterator[int]:
    """Serve the storefront page on a free loopback port; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_PageHandler))
    thread = threading.Thread(target=server.serve_forever, name="storefront-page", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def chromium(profile_dir: Path) -> AsyncIterator[BrowserContext]:
    """A fresh headless Chromium (its own empty profile: no cookies, no stored anonymous id)."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_FLAGS),
        )
        try:
            yield context
        finally:
            await context.close()

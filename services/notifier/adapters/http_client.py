"""The notifier's one HTTP client: the stores' platforms (coupons, consent), webhooks, recommendations."""

from __future__ import annotations

import importlib.util
import sys

import httpx


def build_http_client() -> httpx.AsyncClient:
    _fail_sniffio_import_at_once()
    return httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))


def _fail_sniffio_import_at_once() -> None:
    """httpcore runs `import sniffio` each time it makes a lock, an event, a semaphore or a cancellation
    shield (about twice a request) and, sniffio not being installed (anyio no longer needs it), takes asyncio
    after the ImportError. A failed import is not remembered: each one searched every directory of sys.path
    again, about 130 us of CPU, a quarter of a Shopify call's (ensure_discount, its three calls: 2,370 ->
    2,140 us a coupon alone, 4,190 -> 3,330 with 16 at once, in process). A None in sys.modules makes the
    same import raise the same ImportError without the search; an installed sniffio is left to be imported."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]

"""The notifier's HTTP client makes httpcore's failed `import sniffio` fail at once, with the same outcome."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import httpcore._synchronization
import pytest

from services.notifier.adapters import http_client


def test_a_missing_sniffio_is_refused_without_a_search_and_httpcore_still_takes_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sniffio", None)  # whatever it was, it is put back afterwards
    del sys.modules["sniffio"]
    if importlib.util.find_spec("sniffio") is not None:
        pytest.skip("sniffio is installed here")
    asyncio.run(http_client.build_http_client().aclose())
    assert sys.modules["sniffio"] is None
    with pytest.raises(ImportError):
        importlib.import_module("sniffio")

    async def detected() -> str:
        return httpcore._synchronization.current_async_library()

    assert asyncio.run(detected()) == "asyncio"


def test_an_installed_sniffio_is_left_to_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sniffio", None)
    del sys.modules["sniffio"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    http_client._fail_sniffio_import_at_once()
    assert "sniffio" not in sys.modules

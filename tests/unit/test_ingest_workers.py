"""INGEST_WORKERS > 1: each worker process builds its own app, and must be as quiet as the single process."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import services.ingest.__main__ as ingest_main


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root, access = logging.getLogger(), logging.getLogger("uvicorn.access")
    saved = (list(root.handlers), root.level, list(access.handlers), access.propagate)
    # A worker freezes the garbage collector at start-up; the test session must not.
    monkeypatch.setattr(ingest_main, "tune_garbage_collector", lambda: None)
    yield
    root.handlers[:], access.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    access.propagate = saved[3]


@pytest.mark.usefixtures("restored_logging")
def test_a_worker_does_not_log_every_request() -> None:
    # uvicorn's HTTP protocol logs each request whenever this logger has a handler, its own or the root's.
    ingest_main.app_from_environment()
    assert logging.getLogger().handlers, "the worker logs as JSON through the root logger"
    assert not logging.getLogger("uvicorn.access").hasHandlers()

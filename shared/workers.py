"""Background workers (consumers, relays, schedulers) that live beside an HTTP server in one process.

A worker that dies must not leave a zombie process that answers /healthz but consumes nothing: the
supervisor logs the crash and asks the server to shut down, and the process exits non-zero so the
process supervisor (compose, systemd, Kubernetes) restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from shared.logging import get_logger
from shared.transient import is_transient

log = get_logger(__name__)


class WorkerGroup:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = False

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._on_done)
        self._tasks.append(task)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            log.info("worker_finished", worker=task.get_name())
            return
        log.critical("worker_crashed", worker=task.get_name(), exc_info=exc)
        self.failed = True
        signal.raise_signal(signal.SIGTERM)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


async def sleep_backoff(attempt: int, *, base: float = 0.2, cap: float = 5.0) -> None:
    """Bounded exponential backoff for reconnect loops."""
    await asyncio.sleep(min(cap, base * (2 ** min(attempt, 10))))


class Poller:
    """A worker that repeats a step (publish an outbox batch, fire due timers, send due messages): again at
    once while the step does a full batch, otherwise after `idle_seconds` or as soon as `wake()` is called.
    Transient failures (database or broker away) are retried with backoff; anything else crashes the
    worker, so the process says so instead of idling as a zombie."""

    def __init__(self, name: str, batch_size: int, idle_seconds: float) -> None:
        self._poller_name = name
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._wake = asyncio.Event()
        # False while the worker waits out an outage: readiness reports it, so the process says it is stuck.
        self.ready = True

    def is_outage(self, exc: BaseException) -> bool:
        """Whether a failure is an outage to wait out (a worker may know more kinds than the database's)."""
        return is_transient(exc)

    def wake(self) -> None:
        self._wake.set()

    async def step(self) -> int:
        """Do one batch of work; return how many items it handled."""
        raise NotImplementedError

    async def run_forever(self) -> None:
        attempt = 0
        while True:
            # Cleared before the step, not after it: a wake-up that comes while the step runs (a commit of
            # new work it may not have seen) must cut the idle wait that follows short, not be lost to it.
            self._wake.clear()
            try:
                handled = await self.step()
                attempt = 0
                self.ready = True
            except Exception as exc:
                if not self.is_outage(exc):
                    raise
                self.ready = False
                log.error(
                    "worker_paused", worker=self._poller_name, attempt=attempt, error=type(exc).__name__
                )
                await sleep_backoff(attempt)
                attempt += 1
                continue
            if handled < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_seconds)


def backoff(attempts: int, *, first: timedelta, cap: timedelta) -> timedelta:
    """Exponential: first, 2 x first, 4 x first... up to cap (attempts counts from 1)."""
    delay: timedelta = first * (2 ** min(max(attempts - 1, 0), 20))
    return min(cap, delay)

"""A polling worker waits out an outage, says it is not ready meanwhile, and crashes on anything else."""

from __future__ import annotations

import asyncio

import pytest

from shared.workers import Poller


class _Flaky(Poller):
    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__("flaky", batch_size=10, idle_seconds=0.01)
        self.failures = failures
        self.readiness: list[bool] = []
        self.steps = 0
        self.third_step = asyncio.Event()

    async def step(self) -> int:
        self.readiness.append(self.ready)
        self.steps += 1
        if self.steps >= 3:
            self.third_step.set()
        if self.failures:
            raise self.failures.pop(0)
        return 0


async def test_an_outage_makes_the_worker_unready_until_a_step_succeeds() -> None:
    worker = _Flaky([ConnectionRefusedError("database away")])
    task = asyncio.create_task(worker.run_forever())
    try:
        await asyncio.wait_for(worker.third_step.wait(), 30)
    finally:
        task.cancel()
    # ready before, not ready on the retry after the outage, ready again after that retry succeeded
    assert worker.readiness[:3] == [True, False, True]
    assert worker.ready


async def test_a_bug_stops_the_worker() -> None:
    worker = _Flaky([ValueError("bug")])
    with pytest.raises(ValueError, match="bug"):
        await asyncio.wait_for(worker.run_forever(), 30)


class _Counting(Poller):
    """Each step wakes itself once while it runs, as a commit of new work during a step would."""

    def __init__(self) -> None:
        super().__init__("counting", batch_size=10, idle_seconds=60.0)
        self.steps = 0
        self.second_step = asyncio.Event()

    async def step(self) -> int:
        self.steps += 1
        if self.steps == 1:
            await asyncio.sleep(0)
            self.wake()  # new work arrived while this step ran
        else:
            self.second_step.set()
        return 0


async def test_a_wake_up_during_a_step_runs_the_next_step_at_once() -> None:
    worker = _Counting()
    task = asyncio.create_task(worker.run_forever())
    try:
        # Not after the 60 s idle wait: the wake-up that came during the first step is not lost.
        await asyncio.wait_for(worker.second_step.wait(), 5)
    finally:
        task.cancel()
    assert worker.steps == 2

"""shared/loop_lag.py: the event loop's lateness, as a timer sees it."""

from __future__ import annotations

import asyncio
import contextlib
import time

from shared.loop_lag import LOOP_LAG, watch_loop_lag


def _observed() -> tuple[float, float]:
    """The histogram's (sum, count) so far."""
    total = count = 0.0
    for metric in LOOP_LAG.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return total, count


async def test_work_that_holds_the_loop_shows_as_lag_and_an_idle_loop_does_not() -> None:
    # The histogram is the process's: other tests' services (their lifespans start the watch) add to it.
    start_sum, start_count = _observed()
    watcher = asyncio.create_task(watch_loop_lag(0.01))
    try:
        await asyncio.sleep(0.2)  # idle: a few samples, each late by little
        idle_sum, idle_count = _observed()
        assert idle_count - start_count >= 5
        # A callback that holds the loop for 150 ms, as a long CPU step does.
        asyncio.get_running_loop().call_soon(time.sleep, 0.15)
        await asyncio.sleep(0.05)
        busy_sum, busy_count = _observed()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert busy_count > idle_count
    # The sample that waited for the held loop was late by most of its 150 ms.
    assert busy_sum - idle_sum >= 0.1
    assert (idle_sum - start_sum) / (idle_count - start_count) < 0.02

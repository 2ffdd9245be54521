"""The publish wait's time limits with one timer (services/ingest/deadlines.py) end waits as asyncio.timeout
does: at each wait's own deadline, as TimeoutError, and an outside cancellation stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.deadlines import Deadlines

# Long enough beside the waits below (0.05 s, started 0.04 s apart) that the unit tests, run at a lower
# priority beside the integration tests (tests/suites.py), keep their order on a starved machine: a stall of
# 0.35 s would be needed to end a short wait by its limit.
LIMIT = 0.4


async def _wait(deadlines: Deadlines, seconds: float) -> str:
    with deadlines.limit():
        await asyncio.sleep(seconds)
    return "done"


async def _outcome(deadlines: Deadlines, seconds: float) -> tuple[str, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result = await _wait(deadlines, seconds)
    except TimeoutError:
        result = "timeout"
    return result, loop.time() - started


async def test_each_wait_ends_at_its_own_deadline() -> None:
    deadlines = Deadlines(LIMIT)
    # Started at different moments: the later ones must not be ended by the first one's timer.
    tasks = []
    for seconds in (0.05, 1.0, 0.05, 1.0, 1.0):
        tasks.append(asyncio.create_task(_outcome(deadlines, seconds)))
        await asyncio.sleep(0.04)
    outcomes = await asyncio.gather(*tasks)
    assert [result for result, _ in outcomes] == ["done", "timeout", "done", "timeout", "timeout"]
    for result, took in outcomes:
        if result == "timeout":
            assert LIMIT - 0.01 <= took < LIMIT + 0.3
    assert len(deadlines) == 0


async def test_a_wait_ended_by_its_limit_leaves_its_task_not_cancelled() -> None:
    deadlines = Deadlines(LIMIT)

    async def after_timeout() -> int:
        with pytest.raises(TimeoutError):
            await _wait(deadlines, 1.0)
        task = asyncio.current_task()
        assert task is not None
        await asyncio.sleep(0)  # still runs: nothing is left to cancel it
        return task.cancelling()

    assert await after_timeout() == 0


async def test_an_outside_cancellation_stays_one() -> None:
    deadlines = Deadlines(LIMIT)
    task = asyncio.create_task(_wait(deadlines, 1.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Its limit, reached later, cancels nothing else.
    await asyncio.sleep(LIMIT)
    assert await _wait(deadlines, 0.01) == "done"


async def test_the_same_outcomes_as_asyncio_timeout() -> None:
    deadlines = Deadlines(LIMIT)

    async def with_asyncio(seconds: float) -> str:
        try:
            async with asyncio.timeout(LIMIT):
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timeout"
        return "done"

    async def with_deadlines(seconds: float) -> str:
        return (await _outcome(deadlines, seconds))[0]

    waits = [0.0, 0.02, 0.2, 0.6, 1.0, 0.04, 0.7]
    ours = await asyncio.gather(*(with_deadlines(s) for s in waits))
    theirs = await asyncio.gather(*(with_asyncio(s) for s in waits))
    assert ours == theirs
    assert ours.count("timeout") == 3

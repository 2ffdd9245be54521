"""Waiting for something the running services do in their own time: poll until it holds, or fail saying
what did not happen. Deadlines are generous on purpose (the machine is shared), checks frequent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float, what: str, *, every: float = 0.1
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, f"not within {within:.0f} s: {what}"
        await asyncio.sleep(every)


async def now_true(value: bool) -> bool:
    """A condition checked in-process, as `eventually` takes it: `eventually(lambda: now_true(...), ...)`."""
    return value

"""Who gets the next free SMTP connection: a transactional message (a welcome the customer is waiting for)
before a marketing one, without starving marketing.

asyncio.Semaphore hands its slots out first come, first served: in the benchmark's end-to-end run (about
100 welcomes and 30 marketing messages a second on 16 connections) a welcome waited behind whatever the
lanes had queued before it. Here a free slot goes to the longest-waiting urgent caller, unless a routine
caller has been passed over `fair_after` times, in which case it goes next: under a steady stream of
transactional mail, marketing still gets at least one hand-over in `fair_after + 1`, and all of them when
nothing urgent waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class ConnectionSlots:
    """At most `size` holders at a time; `acquire` then `release`, as a semaphore's."""

    def __init__(self, size: int, *, fair_after: int = 8) -> None:
        self._free = size
        self._fair_after = fair_after
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._routine: deque[asyncio.Future[None]] = deque()
        self._passed = 0  # urgent hand-overs while the routine caller at the head of its queue waited

    async def acquire(self, *, urgent: bool) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._routine
        queue.append(waiter)
        self._hand_over()
        if waiter.done():
            return
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just before the cancellation: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                self._hand_over()
            raise

    def release(self) -> None:
        self._free += 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._free > 0:
            waiter = self._next()
            if waiter is None:
                return
            self._free -= 1
            waiter.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        for queue in (self._urgent, self._routine):
            while queue and queue[0].done():  # cancelled while waiting
                queue.popleft()
        if self._routine and (not self._urgent or self._passed >= self._fair_after):
            self._passed = 0
            return self._routine.popleft()
        if self._urgent:
            if self._routine:
                self._passed += 1
            return self._urgent.popleft()
        return None

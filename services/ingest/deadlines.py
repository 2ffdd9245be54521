"""The time limit of every request's wait for Kafka, kept by one timer for all of them.

`asyncio.timeout` arms and cancels a timer of the event loop per use: 7.6 µs under uvloop (measured in
process, issue 14's sixth round), about 7 % of a Shopify webhook's CPU in ingest. Every wait here has the same
length, so their deadlines come in the order they start: a queue of them, with one timer set for the oldest
one still waiting, does the same work with a timer armed about once per limit's length instead of once per
request.

What happens when a limit runs out is what `asyncio.timeout` does: the waiting task is cancelled, and the
cancellation leaves the `with` block as TimeoutError, unless someone else cancelled the task too (then it
stays a cancellation).
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType


class Limit:
    """One wait's limit: `with deadlines.limit(): ...` (only inside a task)."""

    __slots__ = ("_deadlines", "_task", "cancelling", "deadline", "expired")

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[object], deadline: float) -> None:
        self._deadlines = deadlines
        # None once the block is left: a finished request's task is not kept alive by the queue.
        self._task: asyncio.Task[object] | None = task
        self.cancelling = task.cancelling()
        self.deadline = deadline
        self.expired = False

    def __enter__(self) -> Limit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        self._deadlines.left()
        # As asyncio.timeout: only a cancellation of ours (no other cancel request came) is the timeout.
        if (
            self.expired
            and task is not None
            and task.uncancel() <= self.cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def expire(self) -> None:
        task = self._task
        if task is not None and not self.expired:
            self.expired = True
            task.cancel()

    @property
    def waiting(self) -> bool:
        return self._task is not None


class Deadlines:
    """Limits of `seconds` each, from the moment `limit()` is called."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._limits: collections.deque[Limit] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def limit(self) -> Limit:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a time limit must be used inside a task")
        loop = asyncio.get_running_loop()
        limit = Limit(self, task, loop.time() + self._seconds)
        self._limits.append(limit)
        if self._timer is None or self._loop is not loop:
            # (Or the timer belongs to an event loop that has ended: a test's.)
            self._loop = loop
            self._timer = loop.call_at(limit.deadline, self._expire)
        return limit

    def left(self) -> None:
        """A limit's block was left: drop the finished waits at the head of the queue (waits end in about
        the order they started, so the queue holds little more than the waits in progress)."""
        limits = self._limits
        while limits and not limits[0].waiting:
            limits.popleft()

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        limits = self._limits
        while limits and (limits[0].deadline <= now or not limits[0].waiting):
            limits.popleft().expire()
        if limits:
            # The oldest wait still in progress; a wait that ended meanwhile only makes it fire early, and
            # the next one is set from there.
            self._timer = loop.call_at(limits[0].deadline, self._expire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __len__(self) -> int:
        return len(self._limits)

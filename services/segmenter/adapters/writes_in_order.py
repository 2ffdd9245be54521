"""A transaction's write statements sent one after another, in the order given, while the caller goes on
preparing the next ones.

A batch's writes are prepared by the client (rows built, documents and funnel events encoded) and run by
PostgreSQL; done one after the other, each waits for the other, and the process idles while PostgreSQL
writes the profiles (the largest statement). Here each statement is sent by a task of its own that first
waits for the one before it, so the statements still reach the connection one at a time and in order (one
statement in flight on it, as asyncpg requires), while the caller prepares the next.

Failures come out as they did one statement after another: the first statement to fail stops every later
one (their tasks re-raise its error without sending anything) and `finish` raises that error; a failure of
the caller's own while statements are in flight waits for them, and an error of theirs, which came first in
the old order, is the one raised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

Send = Callable[[AsyncConnection], Awaitable[object]]
R = TypeVar("R")
W = TypeVar("W")


async def alongside(statement: Awaitable[R], work: Callable[[], W]) -> tuple[R, W]:
    """The statement's result and `work()`'s, the work done while PostgreSQL runs the statement (sent by a
    task of its own). Errors as in WritesInOrder: a failure of the statement came first and is the one
    raised; cancelling cancels the statement."""
    task = asyncio.ensure_future(statement)
    try:
        await asyncio.sleep(0)  # one turn of the event loop: the statement is sent
        done = work()
    except Exception:
        await task  # raises the statement's error, which came before the work's
        raise
    except BaseException:
        await _cancel(task)
        raise
    return await task, done


async def _cancel(task: asyncio.Task[R] | asyncio.Future[R]) -> None:
    """Cancel a statement in flight and wait until it has stopped, as an awaited one would have been."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


class WritesInOrder:
    """Statements of one transaction on `conn`, sent in the order `then` is called. Use as an async
    context manager: leaving it waits for every statement (see the module's docstring for errors)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._last: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WritesInOrder:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if error is None:
            await self.finish()
        elif isinstance(error, Exception):
            await self.finish()  # raises a statement's error, which came before the caller's
        else:  # cancelled (or exiting): the statement in flight is cancelled too, as an awaited one was
            last, self._last = self._last, None
            if last is not None:
                await _cancel(last)

    async def then(self, send: Send | None) -> None:
        """Send this statement once those before it are done (nothing when None); returns at once, after
        giving the statement the chance to go out."""
        if send is None:
            return
        self._last = asyncio.create_task(self._after(self._last, send))
        # One turn of the event loop: the task encodes and sends its statement (or starts waiting for the
        # one before it), and the caller prepares the next while PostgreSQL works.
        await asyncio.sleep(0)

    async def finish(self) -> None:
        """Wait until every statement given has run; raise the first one's error that failed."""
        last, self._last = self._last, None
        if last is not None:
            await last

    async def _after(self, before: asyncio.Task[None] | None, send: Send) -> None:
        if before is not None:
            await before  # its error is this one's: a later statement is never sent after a failure
        await send(self._conn)

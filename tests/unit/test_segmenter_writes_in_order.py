"""A batch's write statements, each sent by a task while the next is prepared (adapters/writes_in_order.py):
still one at a time and in order, and a failure comes out as it did one statement after another."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.writes_in_order import WritesInOrder

CONN = cast(AsyncConnection, object())


class Database:
    """Statements as they reach the connection: their names, how many were in flight at once, and one
    that fails."""

    def __init__(self, failing: str | None = None, *, held: bool = False) -> None:
        self.sent: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.failing = failing
        # A held database finishes no statement until released: what the caller did meanwhile does not
        # depend on how fast the machine runs the test (a 1 ms statement once finished first on a busy one).
        self.released = asyncio.Event()
        if not held:
            self.released.set()

    def statement(self, name: str) -> Callable[[AsyncConnection], Awaitable[object]]:
        async def send(conn: Any) -> None:
            assert conn is CONN
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await self.released.wait()
                await asyncio.sleep(0.001)  # the server's work: the caller runs meanwhile
                if name == self.failing:
                    raise RuntimeError(f"{name} refused")
                self.sent.append(name)
            finally:
                self.in_flight -= 1

        return send


async def test_statements_run_one_at_a_time_in_the_order_given_while_the_caller_goes_on() -> None:
    db = Database(held=True)
    prepared: list[str] = []
    # A `then` that waited for its statement would wait for good here: a failure after 5 s, not a hang.
    async with asyncio.timeout(5), WritesInOrder(CONN) as writes:
        for name in ("profiles", "identities", "orders", "outbox"):
            prepared.append(name)
            await writes.then(db.statement(name))
            await writes.then(None)  # nothing to write: nothing sent
        # The caller was not held up by the statements: it prepared all four while the first was in flight.
        assert db.sent == []
        assert db.in_flight == 1
        db.released.set()
    assert prepared == ["profiles", "identities", "orders", "outbox"]
    assert db.sent == ["profiles", "identities", "orders", "outbox"]
    assert db.most_in_flight == 1


async def write_all(db: Database, *names: str) -> None:
    async with WritesInOrder(CONN) as writes:
        for name in names:
            await writes.then(db.statement(name))


async def write_then_fail(db: Database, name: str) -> None:
    async with WritesInOrder(CONN) as writes:
        await writes.then(db.statement(name))
        raise ValueError("preparing the next statement failed")


async def test_the_first_failing_statement_stops_the_later_ones_and_is_raised() -> None:
    db = Database(failing="identities")
    with pytest.raises(RuntimeError, match="identities refused"):
        await write_all(db, "profiles", "identities", "orders", "outbox")
    assert db.sent == ["profiles"]
    assert db.in_flight == 0


async def test_a_statement_error_comes_before_an_error_of_the_caller_that_followed_it() -> None:
    db = Database(failing="profiles")
    with pytest.raises(RuntimeError, match="profiles refused"):
        await write_then_fail(db, "profiles")
    assert db.in_flight == 0


async def test_an_error_of_the_caller_waits_for_the_statements_in_flight_and_is_raised() -> None:
    db = Database()
    with pytest.raises(ValueError, match="preparing"):
        await write_then_fail(db, "profiles")
    # Done before the error went up (the transaction's rollback then finds the connection free).
    assert db.sent == ["profiles"]
    assert db.in_flight == 0


async def test_cancelling_the_caller_cancels_the_statement_in_flight() -> None:
    db = Database()
    started = asyncio.Event()

    async def slow(conn: Any) -> None:
        started.set()
        await asyncio.sleep(10)

    async def batch() -> None:
        async with WritesInOrder(CONN) as writes:
            await writes.then(slow)
            await writes.then(db.statement("outbox"))
            await asyncio.sleep(10)

    task = asyncio.create_task(batch())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.sent == []

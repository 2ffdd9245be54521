"""all_acknowledged replaces asyncio.gather over every record's acknowledgement in ingest: it must return only
once every one is in, and raise as soon as one it checks has failed, like gather."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from shared.kafka import all_acknowledged


def futures(count: int) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(count)]


async def test_returns_once_every_acknowledgement_is_in() -> None:
    acks = futures(5)
    waiting = asyncio.ensure_future(all_acknowledged(acks))
    for ack in acks[::-1][:4]:
        ack.set_result(None)
        await asyncio.sleep(0)
        assert not waiting.done()
    acks[0].set_result(None)  # the first one last: it is still waited for
    await asyncio.wait_for(waiting, 1)


async def test_a_failure_already_in_is_raised() -> None:
    acks = futures(4)
    for ack in acks:
        ack.set_result(None)
    acks[1] = asyncio.get_running_loop().create_future()
    acks[1].set_exception(ConnectionError("broker gone"))
    with pytest.raises(ConnectionError, match="broker gone"):
        await all_acknowledged(acks)


async def test_a_failure_while_waiting_is_raised_and_the_others_are_not_reported_unhandled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    acks = futures(3)
    waiting = asyncio.ensure_future(all_acknowledged(acks))
    await asyncio.sleep(0)
    acks[2].set_exception(TimeoutError())
    with pytest.raises(TimeoutError):
        await waiting
    acks[0].set_exception(TimeoutError())
    acks[1].set_exception(TimeoutError())
    await asyncio.sleep(0)
    del acks, waiting
    gc.collect()
    assert "exception was never retrieved" not in caplog.text


async def test_a_cancelled_acknowledgement_is_not_taken_for_success() -> None:
    acks = futures(2)
    acks[0].cancel()
    acks[1].set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await all_acknowledged(acks)


async def test_nothing_to_wait_for() -> None:
    await all_acknowledged([])

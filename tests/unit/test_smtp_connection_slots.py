"""Who gets the next free SMTP connection: transactional messages before marketing ones waiting, marketing
never starved, and a caller cancelled while waiting or just granted never loses a connection."""

from __future__ import annotations

import asyncio

from services.notifier.adapters.connection_slots import ConnectionSlots


async def _holders(slots: ConnectionSlots, callers: list[tuple[str, bool]], order: list[str]) -> None:
    """Each caller, in turn, starts waiting for a slot; a caller notes its name when granted, then lets go."""

    async def hold(name: str, urgent: bool) -> None:
        await slots.acquire(urgent=urgent)
        order.append(name)
        await asyncio.sleep(0)
        slots.release()

    tasks = []
    for name, urgent in callers:
        tasks.append(asyncio.create_task(hold(name, urgent)))
        await asyncio.sleep(0)  # queued in this order
    await asyncio.gather(*tasks)


async def test_free_slots_are_taken_at_once_whatever_the_kind() -> None:
    slots = ConnectionSlots(2)
    await slots.acquire(urgent=False)
    await asyncio.wait_for(slots.acquire(urgent=False), 0.1)


async def test_an_urgent_caller_goes_before_routine_ones_that_waited_longer() -> None:
    slots = ConnectionSlots(1)
    await slots.acquire(urgent=False)  # the one connection is busy
    order: list[str] = []
    waiting = asyncio.create_task(
        _holders(slots, [("m1", False), ("m2", False), ("w1", True), ("m3", False), ("w2", True)], order)
    )
    await asyncio.sleep(0.01)
    slots.release()
    await waiting
    assert order == ["w1", "w2", "m1", "m2", "m3"]


async def test_a_routine_caller_passed_over_fair_after_times_goes_next() -> None:
    slots = ConnectionSlots(1, fair_after=2)
    await slots.acquire(urgent=True)
    order: list[str] = []
    callers = [("m1", False)] + [(f"w{i}", True) for i in range(5)] + [("m2", False)]
    waiting = asyncio.create_task(_holders(slots, callers, order))
    await asyncio.sleep(0.01)
    slots.release()
    await waiting
    assert order == ["w0", "w1", "m1", "w2", "w3", "m2", "w4"]


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    slots = ConnectionSlots(1)
    await slots.acquire(urgent=True)
    cancelled = asyncio.create_task(slots.acquire(urgent=True))
    await asyncio.sleep(0)
    cancelled.cancel()
    slots.release()  # granted to nobody but the next caller
    await asyncio.wait_for(slots.acquire(urgent=False), 0.1)


async def test_a_waiter_cancelled_right_after_its_grant_passes_the_slot_on() -> None:
    slots = ConnectionSlots(1)
    await slots.acquire(urgent=True)
    granted = asyncio.create_task(slots.acquire(urgent=True))
    await asyncio.sleep(0)
    other = asyncio.create_task(slots.acquire(urgent=False))
    await asyncio.sleep(0)
    slots.release()  # to `granted`, which is cancelled before it runs again
    granted.cancel()
    await asyncio.wait_for(other, 0.1)

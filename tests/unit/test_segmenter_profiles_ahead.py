"""The customers a batch decided ahead is reading, kept from the timer rounds of the same process, and the
rounds such a batch waits for (services/segmenter/entrypoints/profiles_ahead.py)."""

from __future__ import annotations

import asyncio

from services.segmenter.entrypoints.profiles_ahead import ProfilesAhead

ANN = ("s", "ann")
BOB = ("s", "bob")
CAL = ("s", "cal")


async def test_a_round_leaves_the_customers_read_ahead_for_a_later_one() -> None:
    ahead = ProfilesAhead()
    batch = object()
    await ahead.read(batch, {ANN})
    assert ahead.fire({ANN, BOB}) == {BOB}
    ahead.fired()
    ahead.locked(batch)  # the batch holds its rows' locks now: the next round takes ann
    assert ahead.fire({ANN, BOB}) == {ANN, BOB}


async def test_a_batch_waits_for_the_round_that_loaded_one_of_its_customers() -> None:
    ahead = ProfilesAhead()
    assert ahead.fire({ANN, CAL}) == {ANN, CAL}
    reading = asyncio.create_task(ahead.read(object(), {ANN, BOB}))
    await asyncio.sleep(0.01)
    assert not reading.done()
    assert ahead.fire({ANN, BOB, CAL}) == {CAL}  # a round started meanwhile leaves them alone already
    ahead.fired()
    await asyncio.wait_for(reading, 1)


async def test_a_batch_does_not_wait_for_a_round_of_other_customers() -> None:
    ahead = ProfilesAhead()
    ahead.fire({CAL})
    await asyncio.wait_for(ahead.read(object(), {ANN, BOB}), 1)
    ahead.fired()


async def test_only_the_batch_read_ahead_last_is_kept_and_only_it_frees_its_customers() -> None:
    ahead = ProfilesAhead()
    first, second = object(), object()
    await ahead.read(first, {ANN})
    await ahead.read(second, {BOB})  # the next batch, read ahead once the first was locked
    assert ahead.fire({ANN, BOB}) == {ANN}
    ahead.fired()
    ahead.locked(first)  # no longer the one read ahead: bob stays kept
    assert not ahead.reading(first)
    assert ahead.reading(second)
    assert ahead.fire({ANN, BOB}) == {ANN}
    ahead.fired()
    ahead.clear()  # dropped (a rebalance), or another batch came
    assert ahead.fire({ANN, BOB}) == {ANN, BOB}

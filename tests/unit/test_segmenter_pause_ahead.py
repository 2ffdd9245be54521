"""Batches decided ahead only while that pays: a pause after each one found stale, doubling while they keep
being found so (services/segmenter/entrypoints/processor.py, PauseAhead)."""

from __future__ import annotations

from services.segmenter.entrypoints.processor import PauseAhead


def _decided(pause: PauseAhead, batches: int) -> list[bool]:
    return [pause.deciding() for _ in range(batches)]


def test_every_batch_is_decided_ahead_while_none_is_found_stale() -> None:
    pause = PauseAhead()
    assert _decided(pause, 5) == [True] * 5
    pause.used()
    assert _decided(pause, 3) == [True] * 3


def test_each_stale_one_in_a_row_pauses_twice_as_long_as_the_one_before() -> None:
    pause = PauseAhead()
    pause.stale()
    assert _decided(pause, 2) == [False, True]
    pause.stale()
    assert _decided(pause, 3) == [False, False, True]
    pause.stale()
    assert _decided(pause, 5) == [False] * 4 + [True]


def test_the_pause_stops_growing_at_its_longest() -> None:
    pause = PauseAhead()
    for _ in range(20):
        pause.stale()
    assert _decided(pause, PauseAhead.LONGEST + 1) == [False] * PauseAhead.LONGEST + [True]


def test_one_that_holds_ends_the_run_of_stale_ones() -> None:
    pause = PauseAhead()
    pause.stale()
    pause.stale()
    assert _decided(pause, 3) == [False, False, True]
    pause.used()
    pause.stale()
    assert _decided(pause, 2) == [False, True]

"""How far a consumer has read its partitions, in its records' time (shared/consumer_progress.py): what the
segmenter's timers wait for. A bound only moves forward, a batch moves it to its last record's time, a
partition read to its end to its last fetch's, and a member tells only the partitions it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition

from shared import consumer_progress
from shared.consumer import ConsumerPipeline
from shared.consumer_progress import ReadProgress
from tests.kafka_fakes import FakeConsumer, FakeRecord, Journal
from tests.polling import eventually, now_true

A, B = TopicPartition("storefront-events", 0), TopicPartition("storefront-events", 1)
FETCHED_MS = 1_796_000_000_000  # 2026-11-30


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def records(tp: TopicPartition, *stamps: int) -> list[FakeRecord]:
    return [FakeRecord(tp.topic, tp.partition, i, b"k", b"v", stamp) for i, stamp in enumerate(stamps)]


def _noting_bounds(
    consumer: FakeConsumer, **options: Any
) -> tuple[ConsumerPipeline[bytes], list[dict[TopicPartition, datetime]], list[int]]:
    """A pipeline of batches of two over `consumer`, whose handler notes the bounds as each batch comes
    (before it commits) and how many records each had."""
    seen: list[dict[TopicPartition, datetime]] = []
    handled: list[int] = []
    pipeline: ConsumerPipeline[bytes]

    async def handle(values: Sequence[bytes]) -> None:
        seen.append(pipeline.read_before())  # before this batch commits
        handled.append(len(values))

    pipeline = ConsumerPipeline(
        name="test",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: None,
        decode=lambda value: value,
        handle=handle,
        max_records=2,
        progress=ReadProgress(),
        **options,
    )
    return pipeline, seen, handled


@pytest.fixture(autouse=True)
def _every_call_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_progress, "CAUGHT_UP_CHECK_SECONDS", 0.0)


def test_a_batch_moves_each_partition_to_its_last_record_and_never_back() -> None:
    progress = ReadProgress()
    progress.handled({A: records(A, 1_000, 5_000), B: records(B, 3_000)})
    assert progress.read_before({A, B}) == {A: at(5_000), B: at(3_000)}
    # Another producer's clock a little behind, or a member before us that had read further: no way back.
    progress.handled({A: records(A, 4_000), B: records(B, -1)})
    assert progress.read_before({A, B}) == {A: at(5_000), B: at(3_000)}
    # Only the partitions the member holds now: another member tells the others'.
    assert progress.read_before({B}) == {B: at(3_000)}


async def test_a_partition_read_to_its_end_is_read_up_to_its_last_fetch() -> None:
    consumer = FakeConsumer.of(Journal(), {(A.topic, 0): [b"a", b"b"], (B.topic, 1): []})
    progress = ReadProgress()
    await progress.caught_up(consumer)
    assert progress.read_before({A, B}) == {}  # nothing fetched yet: nothing known
    consumer.fetched_at_ms = FETCHED_MS
    await progress.caught_up(consumer)
    # B has no record at all, and is read to its end; A's two records are not handled yet.
    assert progress.read_before({A, B}) == {B: at(FETCHED_MS)}
    await consumer.getmany()
    await progress.caught_up(consumer)
    assert progress.read_before({A, B}) == {A: at(FETCHED_MS), B: at(FETCHED_MS)}


async def test_the_check_runs_at_most_every_half_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_progress, "CAUGHT_UP_CHECK_SECONDS", 0.5)
    consumer = FakeConsumer.of(Journal(), {(B.topic, 1): []})
    consumer.fetched_at_ms = FETCHED_MS
    progress = ReadProgress()
    await progress.caught_up(consumer)
    consumer.fetched_at_ms = FETCHED_MS + 100
    await progress.caught_up(consumer)  # straight after: not checked again
    assert progress.read_before({B}) == {B: at(FETCHED_MS)}


async def test_the_pipeline_moves_the_bounds_as_it_handles_and_catches_up() -> None:
    journal = Journal()
    consumer = FakeConsumer({A: records(A, 1_000, 2_000, 3_000), B: []}, journal, fetched_at_ms=None)
    pipeline, seen, handled = _noting_bounds(consumer)
    running = asyncio.create_task(pipeline.run_forever())
    try:
        await eventually(
            lambda: now_true(sum(handled) == 3 and A in pipeline.read_before()), 5, "all handled"
        )
        # The first batch read nothing yet; the second, the first's two records (A not at its end yet).
        assert seen == [{}, {A: at(2_000)}]
        assert pipeline.read_before() == {A: at(3_000)}  # never fetched: the fake knows no highwater
        consumer.fetched_at_ms = FETCHED_MS
        caught_up = {A: at(FETCHED_MS), B: at(FETCHED_MS)}
        await eventually(lambda: now_true(pipeline.read_before() == caught_up), 5, "both read to their end")
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(running, 5)


async def test_the_check_skips_the_partitions_of_a_batch_in_hand() -> None:
    consumer = FakeConsumer({A: records(A, 1_000), B: []}, Journal(), fetched_at_ms=FETCHED_MS)
    await consumer.getmany()  # A's record returned, in a batch not handled yet
    progress = ReadProgress()
    await progress.caught_up(consumer, pending={A})
    # A's position has reached its highwater, but only by the batch in hand.
    assert progress.read_before({A, B}) == {B: at(FETCHED_MS)}


@pytest.mark.parametrize("reads_ahead", ["decode_ahead", "prepare"])
async def test_in_a_backlog_a_partition_read_to_its_end_moves_while_the_others_are_handled(
    reads_ahead: str,
) -> None:
    # A backlog on A (three full batches, each read ahead while the one before is handled); B has no
    # record at all. B is read to its end from the start, and must not wait for A's backlog to drain to
    # say so; A, whose last records sit in the batch read ahead, must not be counted as read to its end.
    consumer = FakeConsumer(
        {A: records(A, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000), B: []}, Journal(), fetched_at_ms=FETCHED_MS
    )
    options: dict[str, Any] = (
        {"decode_ahead": 2} if reads_ahead == "decode_ahead" else {"prepare": lambda values: None}
    )
    pipeline, seen, _ = _noting_bounds(consumer, **options)
    running = asyncio.create_task(pipeline.run_forever())
    try:
        await eventually(lambda: now_true(len(seen) >= 3), 5, "A's three batches handled")
        assert seen[:3] == [
            {},  # nothing handled or checked yet
            {A: at(2_000), B: at(FETCHED_MS)},  # B read to its end while A's backlog goes on
            {A: at(4_000), B: at(FETCHED_MS)},  # A's position is at its highwater, by the batch in hand
        ]
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(running, 5)

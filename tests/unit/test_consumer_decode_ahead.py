"""Decoding ahead (shared/consumer.py, `decode_ahead`): while a full batch is handled, the next one is taken
and its first records decoded. The batches handled, the dead letters and the commits must be exactly those
of a pipeline that decodes each batch when it comes to it, and a batch read ahead is never handled for a
partition a rebalance took away meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import TopicPartition

from shared.consumer import ConsumerPipeline
from shared.events import StorefrontEvent, decode_event, encode_event
from tests.builders import canonical_event
from tests.kafka_fakes import FakeConsumer, FakeProducer, Journal

TOPIC = "storefront-events"
T0 = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)


def good(event_id: str) -> bytes:
    return encode_event(
        canonical_event("demo", "customer_upserted", T0, {"store_customer_id": "c1"}, event_id=event_id)
    )


@dataclass
class Run:
    batches: list[list[str]]
    journal: list[tuple[str, object]]
    committed: dict[TopicPartition, int]


async def consume(
    values: dict[tuple[str, int], list[bytes | None]],
    *,
    max_records: int,
    decode_ahead: int,
    revoke_after_first: TopicPartition | None = None,
    prepare: Callable[[Sequence[StorefrontEvent]], None] | None = None,
    unprepare: Callable[[], Awaitable[None]] | None = None,
    announce: Callable[[Sequence[bytes | None]], None] | None = None,
    handled: Callable[[Sequence[StorefrontEvent]], None] = lambda _: None,
) -> Run:
    """Run a pipeline over `values` until every record is committed; optionally take a partition away from
    the member once the first batch was handled (as a rebalance would). `prepare`, `unprepare` and
    `announce` go to the pipeline; `handled` sees each batch's values as they are handled."""
    journal = Journal()
    consumer = FakeConsumer.of(journal, values)
    total = sum(len(v) for v in values.values())
    batches: list[list[str]] = []
    consuming: ConsumerPipeline[StorefrontEvent]

    async def handle(events: Sequence[StorefrontEvent]) -> None:
        # A wait, as the database's: the batch read ahead is taken meanwhile.
        await asyncio.sleep(0)
        journal.entries.append(("handle", len(events)))
        batches.append([e.event_id for e in events])
        handled(events)
        if revoke_after_first is not None and len(batches) == 1:
            consumer.logs.pop(revoke_after_first)

    consuming = ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: FakeProducer(journal),
        decode=decode_event,
        handle=handle,
        max_records=max_records,
        decode_ahead=decode_ahead,
        prepare=prepare,
        unprepare=unprepare,
        announce=announce,
    )
    original_commit = consumer.commit

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        await original_commit(offsets)
        handled = sum(consumer.committed.get(tp, 0) for tp in consumer.logs)
        left = sum(len(records) for records in consumer.logs.values())
        if handled >= left or handled >= total:
            consuming.stop_after_batch()

    consumer.commit = commit  # type: ignore[method-assign]
    await consuming.run_forever()
    return Run(batches, journal.entries, consumer.committed)


VALUES: dict[tuple[str, int], list[bytes | None]] = {
    (TOPIC, 0): [good("a"), b"not json", good("b"), good("c"), None],
    (TOPIC, 1): [good("d"), good("e"), b"{}", good("f")],
    (TOPIC, 2): [good("g")],
}


async def test_decoding_ahead_handles_dead_letters_and_commits_exactly_as_without() -> None:
    plain = await consume(VALUES, max_records=3, decode_ahead=0)
    for ahead in (1, 2, 3, 10):
        with_ahead = await consume(VALUES, max_records=3, decode_ahead=ahead)
        assert with_ahead.batches == plain.batches
        assert with_ahead.journal == plain.journal
        assert with_ahead.committed == plain.committed
    assert plain.committed == {
        TopicPartition(TOPIC, 0): 5,
        TopicPartition(TOPIC, 1): 4,
        TopicPartition(TOPIC, 2): 1,
    }


async def test_a_batch_read_ahead_is_not_handled_for_a_partition_taken_away_meanwhile() -> None:
    values: dict[tuple[str, int], list[bytes | None]] = {
        (TOPIC, 0): [good("a"), good("b"), good("x")],
        (TOPIC, 1): [good("c"), good("d")],
    }
    run = await consume(values, max_records=2, decode_ahead=2, revoke_after_first=TopicPartition(TOPIC, 1))
    # The first batch (a, b) was full, so (x, c) were read and decoded ahead while it was handled; then
    # partition 1 went to another member, which reads c and d again from its committed offset: only x is
    # handled and committed here.
    assert run.batches == [["a", "b"], ["x"]]
    assert run.committed == {TopicPartition(TOPIC, 0): 3}


async def test_the_next_full_batch_is_decoded_while_the_one_in_hand_waits_on_the_database() -> None:
    order: list[str] = []
    values: dict[tuple[str, int], list[bytes | None]] = {(TOPIC, 0): [good(i) for i in "abcde"]}
    consumer = FakeConsumer.of(Journal(), values)
    consuming: ConsumerPipeline[StorefrontEvent]

    def decode(raw: bytes) -> StorefrontEvent:
        event = decode_event(raw)
        order.append(f"decode {event.event_id}")
        return event

    async def handle(events: Sequence[StorefrontEvent]) -> None:
        await asyncio.sleep(0)  # the database's wait
        order.append("handled " + "".join(e.event_id for e in events))
        if events[-1].event_id == "e":
            consuming.stop_after_batch()

    consuming = ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: None,
        decode=decode,
        handle=handle,
        max_records=2,
        decode_ahead=1,
    )
    await consuming.run_forever()
    # c (the first of the next batch, and no more) is decoded during a-b's wait, e during c-d's; the last
    # batch is not full, so nothing is read ahead of it.
    assert order == [
        "decode a", "decode b", "decode c", "handled ab", "decode d", "decode e", "handled cd", "handled e",
    ]  # fmt: skip

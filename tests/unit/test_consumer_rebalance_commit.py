"""A rebalance that ends while a batch is handled: the batch's commit covers only the partitions still
assigned, and the consumer goes on. aiokafka refuses to commit a partition it no longer assigns with
IllegalStateError (checked before it sends anything), which ended the consumer of the instance already in
the group each time a second one joined it (the benchmark's two-instance run, round 9)."""

from __future__ import annotations

from collections.abc import Sequence
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


def pipeline(consumer: FakeConsumer, journal: Journal, handle: object) -> ConsumerPipeline[StorefrontEvent]:
    return ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: FakeProducer(journal),
        decode=decode_event,
        handle=handle,  # type: ignore[arg-type]
    )


async def test_a_partition_taken_away_while_its_batch_was_handled_is_left_to_its_new_owner() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a"), good("b")], (TOPIC, 1): [good("c")]})
    handled: list[list[str]] = []

    async def handle(events: Sequence[StorefrontEvent]) -> None:
        handled.append([e.event_id for e in events])
        consumer.logs.pop(TopicPartition(TOPIC, 1))  # the rebalance ends while the database works

    consuming = pipeline(consumer, journal, handle)
    await consuming.process(consumer, consumer.batch())
    # Handled whole; partition 1's new owner reads c again from its committed offset (0) and the handler's
    # idempotency makes that second delivery harmless; partition 0, still ours, is committed past b.
    assert handled == [["a", "b", "c"]]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2}
    assert journal.entries[-1] == ("commit", {TopicPartition(TOPIC, 0): 2})


async def test_a_batch_whose_partitions_were_all_taken_away_commits_nothing() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a")], (TOPIC, 1): [good("b")]})

    async def handle(events: Sequence[StorefrontEvent]) -> None:
        del events
        consumer.logs.clear()  # mid-rebalance: nothing assigned yet

    await pipeline(consumer, journal, handle).process(consumer, consumer.batch())
    assert consumer.committed == {}
    assert [kind for kind, _ in journal.entries] == []

"""The consumer pipeline's rules against an in-memory Kafka (tests/kafka_fakes.py), in milliseconds: the
same rules tests/integration/test_dead_letters.py and test_segmenter_consumer.py check on a real broker.

- commit is the last step, past every record of the batch, and never after a crash;
- a poison message goes to the DLQ with its origin, before the commit, and the good ones still count;
- a message the database refuses is isolated and dead-lettered alone;
- the DLQ limit counts consecutive invalid messages per partition, as getsentry/arroyo does;
- a duplicate inside one batch is applied once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from sqlalchemy.exc import DBAPIError

import shared.consumer
from services.segmenter.adapters.event_decoding import decode_storefront_event
from services.segmenter.service_layer.write_set import first_copies
from shared.consumer import ConsumerPipeline, DlqLimit, DlqLimitExceeded
from shared.events import StorefrontEvent, decode_event, encode_event
from shared.kafka import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from shared.storefront_event_structs import StorefrontEvent as SegmenterEvent
from tests.builders import canonical_event, segmenter_event
from tests.kafka_fakes import FakeConsumer, FakeProducer, Journal

TOPIC = "storefront-events"
T0 = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def at_once(attempt: int, **_: float) -> None:
        del attempt

    monkeypatch.setattr(shared.consumer, "sleep_backoff", at_once)


def good(event_id: str) -> bytes:
    return encode_event(
        canonical_event("demo", "customer_upserted", T0, {"store_customer_id": "c1"}, event_id=event_id)
    )


class _PgError(Exception):
    sqlstate = "22012"  # division_by_zero: a data exception, what is_bad_data calls poison


class Handler:
    """Records what it was handed; refuses (like the database) any batch holding an event named poison."""

    def __init__(self, journal: Journal, *, crash: bool = False) -> None:
        self.journal = journal
        self.crash = crash
        self.batches: list[list[str]] = []

    async def __call__(self, events: Sequence[StorefrontEvent]) -> None:
        self.journal.entries.append(("handle", len(events)))
        if self.crash:
            raise RuntimeError("a bug")
        if any("poison" in e.event_id for e in events):
            raise DBAPIError("INSERT ...", {}, _PgError("division by zero"))
        self.batches.append([e.event_id for e in events])


def pipeline(handler: Handler, producer: FakeProducer, limit: int = 100) -> ConsumerPipeline[StorefrontEvent]:
    return ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: FakeConsumer({}, handler.journal),
        dlq_producer=lambda: producer,
        decode=decode_event,
        handle=handler,
        dlq_limit=DlqLimit(max_consecutive_invalid=limit),
    )


async def test_commit_is_the_last_step_and_goes_past_every_record_of_each_partition() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a"), good("b")], (TOPIC, 1): [good("c")]})
    handler = Handler(journal)
    await pipeline(handler, FakeProducer(journal)).process(consumer, consumer.batch())
    assert journal.entries == [
        ("handle", 3),
        ("commit", {TopicPartition(TOPIC, 0): 2, TopicPartition(TOPIC, 1): 1}),
    ]
    assert handler.batches == [["a", "b", "c"]]


async def test_nothing_is_committed_when_the_handler_crashes() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a")]})
    with pytest.raises(RuntimeError, match="a bug"):
        await pipeline(Handler(journal, crash=True), FakeProducer(journal)).process(
            consumer, consumer.batch()
        )
    assert [kind for kind, _ in journal.entries] == ["handle"]
    assert consumer.committed == {}


async def test_poison_goes_to_the_dlq_with_its_origin_before_the_commit_and_good_events_still_count() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 3): [good("a"), b"not json", good("b"), None]})
    producer = FakeProducer(journal, fail_next=1)  # the DLQ's broker is away once: retried, not lost
    handler = Handler(journal)
    await pipeline(handler, producer).process(consumer, consumer.batch())
    assert journal.entries == [
        ("handle", 2),
        ("dlq", 1),
        ("dlq", 3),
        ("commit", {TopicPartition(TOPIC, 3): 4}),
    ]
    assert handler.batches == [["a", "b"]]
    first, second = producer.sent
    assert first.topic == f"{TOPIC}.dlq"
    assert (first.value, first.key) == (b"not json", b"k")
    assert (first.headers[DLQ_TOPIC], first.headers[DLQ_PARTITION], first.headers[DLQ_OFFSET]) == (
        TOPIC.encode(),
        b"3",
        b"1",
    )
    assert b"validation error" in first.headers[DLQ_REASON]
    assert b"no value" in second.headers[DLQ_REASON]


async def test_a_message_the_database_refuses_is_isolated_and_dead_lettered_alone() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a"), good("poison"), good("b")]})
    producer = FakeProducer(journal)
    handler = Handler(journal)
    await pipeline(handler, producer).process(consumer, consumer.batch())
    # The whole batch once, then one by one; only the refused message is dead-lettered.
    assert journal.entries == [
        ("handle", 3),
        ("handle", 1),
        ("handle", 1),
        ("handle", 1),
        ("dlq", 1),
        ("commit", {TopicPartition(TOPIC, 0): 3}),
    ]
    assert handler.batches == [["a"], ["b"]]
    [refused] = producer.sent
    assert refused.headers[DLQ_REASON].startswith(b"refused by the database: _PgError")


async def test_the_dlq_limit_counts_consecutive_invalid_messages_per_partition() -> None:
    journal = Journal()
    # Two in a row on each of two partitions: within a limit of 2, though four in the batch.
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [b"x", b"y"], (TOPIC, 1): [b"x", b"y"]})
    producer = FakeProducer(journal)
    await pipeline(Handler(journal), producer, limit=2).process(consumer, consumer.batch())
    assert len(producer.sent) == 4


async def test_a_valid_message_ends_a_run_of_invalid_ones() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [b"x", b"y", good("a"), b"z", b"w"]})
    producer = FakeProducer(journal)
    await pipeline(Handler(journal), producer, limit=2).process(consumer, consumer.batch())
    assert [int(s.headers[DLQ_OFFSET]) for s in producer.sent] == [0, 1, 3, 4]


async def test_a_run_over_the_limit_stops_the_consumer_even_across_batches_and_commits_nothing() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [b"x", b"y", b"z"]})
    producer = FakeProducer(journal)
    consuming = pipeline(Handler(journal), producer, limit=2)
    tp = TopicPartition(TOPIC, 0)
    await consuming.process(consumer, {tp: consumer.logs[tp][:2]})
    assert consumer.committed == {tp: 2}
    with pytest.raises(DlqLimitExceeded, match="in a row on storefront-events/0"):
        await consuming.process(consumer, {tp: consumer.logs[tp][2:]})
    assert len(producer.sent) == 2  # the third was neither dead-lettered...
    assert consumer.committed == {tp: 2}  # ...nor committed


async def test_the_database_refusals_count_towards_the_limit_in_offset_order() -> None:
    journal = Journal()
    # offset 0 fails decoding, 1 is refused by the database, 2 fails decoding: three in a row.
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [b"x", good("poison"), b"y"]})
    with pytest.raises(DlqLimitExceeded):
        await pipeline(Handler(journal), FakeProducer(journal), limit=2).process(consumer, consumer.batch())
    assert consumer.committed == {}


async def test_a_duplicate_inside_one_batch_is_applied_once() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a"), good("a"), good("b")]})
    claimed: set[tuple[str, str]] = {("demo", "b")}  # b was processed by an earlier batch
    applied: list[str] = []

    async def handle(events: Sequence[SegmenterEvent]) -> None:
        # What the segmenter does: ON CONFLICT DO NOTHING RETURNING, then first_copies.
        first_seen = {(e.store_id, e.event_id) for e in events} - claimed
        claimed.update(first_seen)
        applied.extend(e.event_id for e in first_copies(events, first_seen))

    consuming: ConsumerPipeline[SegmenterEvent] = ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: FakeProducer(journal),
        decode=decode_storefront_event,
        handle=handle,
    )
    await consuming.process(consumer, consumer.batch())
    assert applied == ["a"]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 3}


def test_first_copies_keeps_the_first_of_each_new_event_in_batch_order() -> None:
    a, b, c = (
        segmenter_event("demo", "customer_upserted", T0, {"store_customer_id": "c1"}, event_id=i)
        for i in ("a", "b", "c")
    )
    assert [e.event_id for e in first_copies([a, b, a, c, b], {("demo", "a"), ("demo", "b")})] == ["a", "b"]


async def test_run_forever_consumes_commits_and_stops_after_the_batch_in_hand() -> None:
    journal = Journal()
    consumer = FakeConsumer.of(journal, {(TOPIC, 0): [good("a"), good("b")]})
    handler = Handler(journal)
    consuming: ConsumerPipeline[StorefrontEvent]

    async def stop_when_done(events: Sequence[StorefrontEvent]) -> None:
        await handler(events)
        if events[-1].event_id == "b":
            consuming.stop_after_batch()

    consuming = ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: None,
        decode=decode_event,
        handle=stop_when_done,
        max_records=1,
    )
    await consuming.run_forever()
    assert handler.batches == [["a"], ["b"]]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2}
    assert consumer.started is False  # left the group

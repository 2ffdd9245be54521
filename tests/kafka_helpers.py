"""Reading a topic's shape and offsets from the broker, for assertions; consuming and sending as the
services do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.segmenter.adapters.event_decoding import decode_decidable
from shared.consumer import ConsumerPipeline, DlqLimit
from shared.consumer_progress import ReadProgress
from shared.storefront_event_structs import StorefrontEvent


async def partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])
    assert found, f"topic {topic} has no partitions (does it exist?)"
    return found


async def end_offsets(bootstrap: str, topic: str) -> int:
    """How many records were ever written to the topic (the sum of its partitions' end offsets)."""
    tps = await partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def committed(bootstrap: str, topic: str, group: str) -> int:
    """The sum of the group's committed offsets over the topic's partitions (0 where none)."""
    tps = await partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(tp) or 0 for tp in tps])
    finally:
        await consumer.stop()


def storefront_pipeline(
    bootstrap: str,
    topic: str,
    group: str,
    handle: Callable[[Sequence[StorefrontEvent]], Awaitable[Any]],
    *,
    dlq_producer: AIOKafkaProducer | None = None,
    dlq_limit: int = 100,
    max_records: int = 1000,
    prepare: Callable[[Sequence[StorefrontEvent]], None] | None = None,
    unprepare: Callable[[], Awaitable[None]] | None = None,
    announce: Callable[[Sequence[bytes | None]], None] | None = None,
    progress: ReadProgress | None = None,
    **consumer_options: Any,
) -> ConsumerPipeline[StorefrontEvent]:
    """The consumer pipeline as the segmenter runs it, on a test topic and group of the test's choosing
    (with `prepare`, each batch read ahead is handed over while the one before is handled, as the
    segmenter hands it to its processor's `send_ahead`; with `announce`, its raw messages first)."""
    return ConsumerPipeline(
        name=f"test-{group}",
        consumer_factory=lambda: group_consumer(bootstrap, topic, group, **consumer_options),
        dlq_producer=lambda: dlq_producer,
        decode=decode_decidable,
        handle=handle,
        dlq_limit=DlqLimit(max_consecutive_invalid=dlq_limit),
        max_records=max_records,
        prepare=prepare,
        unprepare=unprepare,
        announce=announce,
        progress=progress,
    )


def group_consumer(bootstrap: str, topic: str, group: str, **options: Any) -> AIOKafkaConsumer:
    """A member of `group` reading `topic` from its start, committing by hand as the services do."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )


async def send_stamped(
    producer: AIOKafkaProducer, topic: str, value: bytes, key: bytes, sent_at: datetime
) -> TopicPartition:
    """Send a record stamped with `sent_at` (as its producer would have stamped it then); the partition it
    went to."""
    sent = await producer.send_and_wait(topic, value, key=key, timestamp_ms=int(sent_at.timestamp() * 1000))
    return TopicPartition(topic, sent.partition)

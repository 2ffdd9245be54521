"""What ingest publishes, read back from a real broker: every record on the partition Kafka's default
partitioner gives its key, with the key and the bytes of the event as they always were, acknowledged before
publish_many returns, and within a partition in the order they were published."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench.workload import Storefront, canonical
from services.ingest.producer import EventPublisher
from shared.kafka import STOREFRONT_EVENTS, build_producer
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration


async def test_records_land_on_the_default_partitioners_partition_with_the_same_bytes(
    kafka_bootstrap: str,
) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap)
    publisher = EventPublisher(settings, lambda: build_producer(settings, "test-publish"), 10.0)
    await publisher.connect_forever()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        probe = build_producer(settings, "test-publish-probe")
        await probe.start()
        try:
            partitions = sorted(await probe.partitions_for(STOREFRONT_EVENTS))
        finally:
            await probe.stop()
        assert partitions
        tps = [TopicPartition(STOREFRONT_EVENTS, p) for p in partitions]
        consumer.assign(tps)
        start = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])

        store = Storefront(seed=8, run=f"publish-{uuid.uuid4().hex[:8]}")
        events = canonical([*store.segment_calls(600), *store.shopify_webhooks(200)])
        # As concurrent requests do: several publish_many at once, sharing the producer's batches.
        chunks = [events[i : i + 100] for i in range(0, len(events), 100)]
        await asyncio.gather(*(publisher.publish_many(chunk) for chunk in chunks))

        # Acknowledged means written: every record is there to read.
        end = await consumer.end_offsets(tps)
        assert sum(end[tp] - start[tp] for tp in tps) >= len(events)
        expected = {e.event_id: e for e in events}
        seen: dict[str, tuple[int, bytes, bytes, int]] = {}
        async with asyncio.timeout(30):
            while len(seen) < len(expected):
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for record in records:
                        assert record.key is not None
                        assert record.value is not None
                        event_id = record.value.split(b'"event_id":"', 1)[1].split(b'"', 1)[0].decode()
                        if event_id in expected:
                            seen[event_id] = (tp.partition, record.key, record.value, record.offset)
    finally:
        await consumer.stop()
        await publisher.close()

    partitioner = DefaultPartitioner()
    for event_id, event in expected.items():
        partition, key, value, _ = seen[event_id]
        assert key == event.partition_key.encode()
        assert value == event.model_dump_json(exclude_none=True).encode()
        assert partition == partitioner(key, partitions, partitions)
    # One request's events of one partition (one customer's among them) are stored in the order it sent them.
    for chunk in chunks:
        for tp in tps:
            offsets = [seen[e.event_id][3] for e in chunk if seen[e.event_id][0] == tp.partition]
            assert offsets == sorted(offsets)

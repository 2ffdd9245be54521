"""The segmenter's outbox relay against a real Postgres and Kafka: rows leave as record batches per
partition, each on the partition `producer.send` would have chosen for its key, in id order per partition,
and are deleted once delivered; a round Kafka refuses deletes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from sqlalchemy import MetaData, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import outbox
from shared.kafka import build_producer, ensure_topics
from shared.outbox import OutboxRelay
from shared.settings import KafkaSettings
from tests.kafka_helpers import end_offsets

pytestmark = pytest.mark.integration

PARTITIONS = 6


@pytest.fixture
async def relay_table(engine: AsyncEngine) -> AsyncIterator[Table]:
    """An outbox of the test's own (the outbox's columns), so no other test's rows are published."""
    table = outbox.to_metadata(MetaData(), name=f"outbox_{uuid.uuid4().hex[:12]}")
    async with engine.begin() as conn:
        await conn.run_sync(table.create)
    yield table
    async with engine.begin() as conn:
        await conn.run_sync(table.drop)


@pytest.fixture
async def relay_producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = build_producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test-relay")
    await producer.start()
    yield producer
    await producer.stop()


async def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the topic's first `count` records, each partition in offset order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[tuple[int, bytes, bytes]] = []
        while len(found) < count:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                found.extend((tp.partition, r.key or b"", r.value or b"") for r in records)
        return found
    finally:
        await consumer.stop()


async def test_the_relay_publishes_each_partitions_rows_in_order_where_send_would_and_deletes_them(
    engine: AsyncEngine, relay_table: Table, relay_producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    topic, reference = f"relay-{uuid.uuid4().hex[:8]}", f"relay-ref-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap)
    await ensure_topics(settings, [topic, reference], partitions=PARTITIONS)
    keys = [f"demo:customer-{n}".encode() for n in range(40)]
    # 20 KB values: 300 of them overflow a 256 KiB record batch several times per partition.
    padding = b"x" * 20_000
    rows = [{"topic": topic, "key": keys[n % len(keys)], "value": b"%06d:" % n + padding} for n in range(300)]
    async with engine.begin() as conn:
        await conn.execute(insert(relay_table), rows)
    relay = OutboxRelay(
        name="test", engine=engine, table=relay_table, producer=lambda: relay_producer, lock_key=0x7E57_0001
    )

    published = await relay.publish_batch()

    assert published == len(rows)
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(relay_table))).scalar() == 0
    # Where `send` puts each key (the producer's own partitioner), for comparison.
    for key in keys:
        await relay_producer.send_and_wait(reference, value=b"", key=key)
    sent = await _read_all(kafka_bootstrap, reference, len(keys))
    expected = {key: partition for partition, key, _ in sent}
    assert len(set(expected.values())) > 1  # the keys do spread over the partitions
    received = await _read_all(kafka_bootstrap, topic, len(rows))
    assert await end_offsets(kafka_bootstrap, topic) == len(rows)
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for partition, key, value in received:
        assert partition == expected[key]
        by_partition[partition].append(value)
    for values in by_partition.values():
        assert values == sorted(values)  # id order within each partition
    assert sorted(v for values in by_partition.values() for v in values) == [r["value"] for r in rows]


async def test_a_round_kafka_refuses_deletes_nothing_and_the_next_one_publishes_the_rows(
    engine: AsyncEngine, relay_table: Table, relay_producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    # A round's rows are deleted only once Kafka acknowledged them all. A broker refusing the records
    # (max.message.bytes smaller than a record: MESSAGE_TOO_LARGE, not retriable,
    # https://kafka.apache.org/documentation/#topicconfigs_max.message.bytes) must leave every row for the
    # next round, and a round once the topic takes them publishes them all.
    topic = f"relay-refused-{uuid.uuid4().hex[:8]}"
    padding = b"x" * 4_000
    rows = [{"topic": topic, "key": b"demo:c-%d" % n, "value": b"%04d:" % n + padding} for n in range(20)]
    values = [r["value"] for r in rows]
    async with engine.begin() as conn:
        await conn.execute(insert(relay_table), rows)
    relay = OutboxRelay(
        name="test", engine=engine, table=relay_table, producer=lambda: relay_producer, lock_key=0x7E57_0003
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": "1024"})])

        with pytest.raises(KafkaError):
            await relay.publish_batch()

        async with engine.connect() as conn:
            kept = await conn.execute(select(relay_table.c.value).order_by(relay_table.c.id))
            assert kept.scalars().all() == values
        assert await end_offsets(kafka_bootstrap, topic) == 0
        # The broker takes them once the topic allows them: the next round publishes all and deletes them.
        allowed = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "1048588"})
        await admin.alter_configs([allowed])
    finally:
        await admin.close()
    published = 0
    for _ in range(50):  # the new limit reaches the partitions' leader within moments
        try:
            published = await relay.publish_batch()
            break
        except KafkaError:
            await asyncio.sleep(0.2)
    assert published == len(rows)
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(relay_table))).scalar() == 0
    # At least once: a round in which one partition's leader already took the records and another's had
    # not yet (the new limit reaching it) rolls back and publishes those records again in the next.
    received = await _read_all(kafka_bootstrap, topic, await end_offsets(kafka_bootstrap, topic))
    assert {value for _, _, value in received} == set(values)

"""Poison messages go to `<topic>.dlq` with their origin; a flood of them stops the consumer instead."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.consumer import ConsumerPipeline, DlqLimitExceeded
from shared.events import OrderPlacedEvent, StorefrontEvent, decode_event
from shared.examples import example_files
from shared.kafka import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, dlq_topic, ensure_topics
from shared.settings import KafkaSettings
from shared.storefront_event_structs import StorefrontEvent as SegmenterEvent
from shared.stores import StoreRegistry
from tests.kafka_helpers import committed, storefront_pipeline

pytestmark = pytest.mark.integration


async def _topics(kafka_bootstrap: str) -> str:
    topic = f"poison-test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(
        KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic, dlq_topic(topic)], partitions=1
    )
    return topic


def _pipeline(
    kafka_bootstrap: str, topic: str, producer: AIOKafkaProducer, handle: FunnelProcessor, limit: int = 100
) -> ConsumerPipeline[SegmenterEvent]:
    return storefront_pipeline(kafka_bootstrap, topic, "g", handle, dlq_producer=producer, dlq_limit=limit)


async def _read_all(
    kafka_bootstrap: str, topic: str, count: int
) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[bytes | None, dict[str, bytes]]] = []
    try:
        async with asyncio.timeout(20):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend((r.value, dict(r.headers)) for r in records)
    finally:
        await consumer.stop()
    return found


async def test_poison_goes_to_the_dlq_with_its_origin_and_good_events_still_count(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    topic = await _topics(kafka_bootstrap)
    [good_path] = [p for p in example_files("storefront-events") if p.stem == "order_placed"]
    good = decode_event(good_path.read_bytes()).model_copy(
        update={"store_id": store_id, "event_id": f"{store_id}-1"}
    )
    await producer.send_and_wait(topic, b"{not json", key=b"k")
    await producer.send_and_wait(topic, good.model_dump_json().encode(), key=good.partition_key.encode())
    await producer.send_and_wait(topic, b'{"schema_version": 1, "type": "order_placed"}', key=b"k")

    handled: list[int] = []

    class Counting(FunnelProcessor):
        async def __call__(self, events: Sequence[SegmenterEvent]) -> None:
            handled.append(len(events))
            await super().__call__(events)

    pipeline = _pipeline(kafka_bootstrap, topic, producer, Counting(engine, StoreRegistry([])))
    task = asyncio.create_task(pipeline.run_forever())
    try:
        dead = await _read_all(kafka_bootstrap, dlq_topic(topic), 2)
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 20)
    assert sum(handled) == 1
    assert [value for value, _ in dead] == [b"{not json", b'{"schema_version": 1, "type": "order_placed"}']
    first, second = (headers for _, headers in dead)
    assert first[DLQ_TOPIC] == topic.encode()
    assert (first[DLQ_PARTITION], first[DLQ_OFFSET]) == (b"0", b"0")
    assert second[DLQ_OFFSET] == b"2"
    assert b"validation error" in second[DLQ_REASON]


async def test_a_flood_of_poison_stops_the_consumer_instead_of_dead_lettering_it_all(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine
) -> None:
    topic = await _topics(kafka_bootstrap)
    for n in range(5):
        await producer.send_and_wait(topic, f"garbage {n}".encode(), key=b"k")
    pipeline = _pipeline(
        kafka_bootstrap, topic, producer, FunnelProcessor(engine, StoreRegistry([])), limit=3
    )
    with pytest.raises(DlqLimitExceeded):
        await asyncio.wait_for(pipeline.run_forever(), 30)


class RefusesPoison(FunnelProcessor):
    """The real processor, plus a real database refusal (SQLSTATE 22012) for one message."""

    async def __call__(self, events: Sequence[SegmenterEvent]) -> None:
        if any("poison" in e.event_id for e in events):
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1 / 0"))
        await super().__call__(events)


async def test_a_message_the_database_refuses_is_isolated_and_dead_lettered_alone(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    topic = await _topics(kafka_bootstrap)
    [good_path] = [p for p in example_files("storefront-events") if p.stem == "order_placed"]
    template = decode_event(good_path.read_bytes())
    events = [
        template.model_copy(update={"store_id": store_id, "event_id": f"{store_id}-{n}"})
        for n in ("a", "poison", "b")
    ]
    processor = RefusesPoison(engine, StoreRegistry([]))
    value, headers = await _one_dead_letter(kafka_bootstrap, topic, producer, processor, events)
    assert value is not None
    assert decode_event(value).event_id == f"{store_id}-poison"
    assert b"refused by the database" in headers[DLQ_REASON]
    assert await _processed(engine, store_id) == [f"{store_id}-a", f"{store_id}-b"]


async def _one_dead_letter(
    kafka_bootstrap: str,
    topic: str,
    producer: AIOKafkaProducer,
    processor: FunnelProcessor,
    events: Sequence[StorefrontEvent],
) -> tuple[bytes | None, dict[str, bytes]]:
    """The events through the segmenter's pipeline until the one dead letter they make is written and every
    event's offset is committed; that dead letter."""
    for event in events:
        await producer.send_and_wait(
            topic, event.model_dump_json().encode(), key=event.partition_key.encode()
        )
    pipeline = _pipeline(kafka_bootstrap, topic, producer, processor)
    task = asyncio.create_task(pipeline.run_forever())
    try:
        [dead] = await _read_all(kafka_bootstrap, dlq_topic(topic), 1)
        await _committed_all(kafka_bootstrap, topic, len(events), task)
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 20)
    return dead


async def _committed_all(kafka_bootstrap: str, topic: str, count: int, task: asyncio.Task[None]) -> None:
    """Until the group has committed `count` offsets of the topic, the pipeline's task still running."""
    deadline = asyncio.get_running_loop().time() + 30
    while await committed(kafka_bootstrap, topic, "g") < count:
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)


async def _processed(engine: AsyncEngine, store_id: str) -> list[str]:
    async with engine.connect() as conn:
        processed = await conn.execute(
            text("SELECT event_id FROM segmenter.processed_events WHERE store_id = :s ORDER BY event_id"),
            {"s": store_id},
        )
        return list(processed.scalars())


async def test_an_event_dated_out_of_range_is_dead_lettered_not_retried_forever(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    """An event ingest would refuse (dated in year 1, by a customer born on 3 January), written to the topic
    another way: deciding it would overflow its birthday reminder (7 days before 3 January of year 1), an
    error no redelivery cures, which stopped the consumer on every restart. It goes to the DLQ naming the
    field, and the events around it still count."""
    topic = await _topics(kafka_bootstrap)
    [path] = [p for p in example_files("storefront-events") if p.stem == "customer_upserted"]
    template = decode_event(path.read_bytes())
    born = template.customer.model_copy(update={"birthday": date(1990, 1, 3)})
    events = [
        template.model_copy(update={"store_id": store_id, "event_id": f"{store_id}-{n}", "customer": born})
        for n in ("a", "year-1", "b")
    ]
    events[1] = events[1].model_copy(
        update={
            "occurred_at": datetime(1, 1, 1, tzinfo=UTC),
            "customer": born.model_copy(update={"updated_at": None, "consent_at": None}),
        }
    )
    processor = FunnelProcessor(engine, StoreRegistry([]))
    value, headers = await _one_dead_letter(kafka_bootstrap, topic, producer, processor, events)
    assert value is not None
    assert decode_event(value).event_id == f"{store_id}-year-1"
    assert b"occurred_at is before 1970-01-01" in headers[DLQ_REASON]
    assert await _processed(engine, store_id) == [f"{store_id}-a", f"{store_id}-b"]


async def test_orders_past_what_a_profile_holds_neither_dead_letter_nor_stop_the_consumer(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    """Orders of the largest amount an order may carry, for one customer (a Segment batch with the write key
    from a store's page, or on-hold WooCommerce orders nobody pays): from the second on, the sum did not fit
    the profile and the database refused each, so they went to the DLQ one after another on the customer's
    one partition, and past the limit (3 here, 100 by default) the consumer stopped. Now the spend is held at
    that amount, and every order is processed."""
    topic = await _topics(kafka_bootstrap)
    [path] = [p for p in example_files("storefront-events") if p.stem == "order_placed"]
    template = decode_event(path.read_bytes())
    assert isinstance(template, OrderPlacedEvent)
    biggest = template.payload.model_copy(update={"total": Decimal("999999999999.99")})
    events = [
        template.model_copy(
            update={
                "store_id": store_id,
                "event_id": f"{store_id}-{n}",
                "payload": biggest.model_copy(update={"order_id": f"o{n}"}),
            }
        )
        for n in range(6)
    ]
    for event in events:
        await producer.send_and_wait(
            topic, event.model_dump_json().encode(), key=event.partition_key.encode()
        )
    pipeline = _pipeline(
        kafka_bootstrap, topic, producer, FunnelProcessor(engine, StoreRegistry([])), limit=3
    )
    task = asyncio.create_task(pipeline.run_forever())
    try:
        await _committed_all(kafka_bootstrap, topic, len(events), task)
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 20)
    assert await _processed(engine, store_id) == sorted(e.event_id for e in events)

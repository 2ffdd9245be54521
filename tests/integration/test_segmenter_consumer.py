"""The segmenter's consumer against a real broker and a real Postgres: redelivery and commit ordering."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import outbox, processed_events, profiles, transitions
from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.consumer import ConsumerPipeline
from shared.events import OrderPlacedEvent, StorefrontEvent, encode_event
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings
from shared.storefront_event_structs import StorefrontEvent as SegmenterEvent
from shared.stores import StoreRegistry
from tests.kafka_helpers import committed, storefront_pipeline

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class SimulatedCrash(Exception):
    """Stands in for the process dying between two steps."""


def _order(store_id: str, customer: str, n: int) -> OrderPlacedEvent:
    return OrderPlacedEvent.model_validate(
        {
            "event_id": f"{store_id}-{customer}-order-{n}",
            "store_id": store_id,
            "customer": {
                "store_customer_id": customer,
                "email": f"{customer}@example.com",
                "first_name": "Kim",
            },
            "occurred_at": T0 + timedelta(days=n),
            "received_at": T0 + timedelta(days=n),
            "source": "api",
            "payload": {"order_id": f"{customer}-o{n}", "total": "10.00", "currency": "EUR"},
        }
    )


async def _topic(kafka_bootstrap: str) -> str:
    topic = f"storefront-test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
    return topic


async def _send(producer: AIOKafkaProducer, topic: str, events: Sequence[StorefrontEvent]) -> None:
    for event in events:
        await producer.send_and_wait(topic, encode_event(event), key=event.partition_key.encode())


def _pipeline(
    kafka_bootstrap: str,
    topic: str,
    group: str,
    handle: Callable[[Sequence[SegmenterEvent]], Awaitable[Any]],
) -> ConsumerPipeline[SegmenterEvent]:
    return storefront_pipeline(kafka_bootstrap, topic, group, handle)


async def _run_until(
    pipeline: ConsumerPipeline[Any], done: Callable[[], Awaitable[bool]], within: float = 30
) -> None:
    task = asyncio.create_task(pipeline.run_forever())
    try:
        deadline = asyncio.get_running_loop().time() + within
        while not await done():
            if task.done():
                task.result()
            assert asyncio.get_running_loop().time() < deadline, "pipeline did not reach the expected state"
            await asyncio.sleep(0.1)
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 20)


async def _state(engine: AsyncEngine, store_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(profiles).where(profiles.c.store_id == store_id))).all()
        return {
            "profiles": sorted((r.customer_id, r.stage, r.orders_count, str(r.total_spent)) for r in rows),
            "transitions": (
                await conn.execute(select(func.count()).where(transitions.c.store_id == store_id))
            ).scalar_one(),
            "processed": (
                await conn.execute(select(func.count()).where(processed_events.c.store_id == store_id))
            ).scalar_one(),
            "outbox": (
                await conn.execute(
                    select(func.count()).where(
                        func.convert_from(outbox.c.key, "UTF8").startswith(f"{store_id}:")
                    )
                )
            ).scalar_one(),
        }


async def test_a_redelivered_batch_changes_nothing(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    topic = await _topic(kafka_bootstrap)
    await _send(
        producer, topic, [_order(store_id, "c1", 1), _order(store_id, "c1", 2), _order(store_id, "c2", 1)]
    )
    processor = FunnelProcessor(engine, StoreRegistry([]))

    async def all_processed() -> bool:
        processed: int = (await _state(engine, store_id))["processed"]
        return processed == 3

    await _run_until(_pipeline(kafka_bootstrap, topic, "first", processor), all_processed)
    before = await _state(engine, store_id)
    assert before["profiles"] == [("c1", "repeat", 2, "20.00"), ("c2", "first_time", 1, "10.00")]
    assert before["transitions"] == 3  # c1: prospect->first_time->repeat, c2: prospect->first_time
    assert before["outbox"] == 6  # three order_placed and three stage_changed funnel events

    # A second group reads the same topic from the start: every event is delivered again.
    seen: list[int] = []

    async def counting(events: Sequence[SegmenterEvent]) -> None:
        seen.append(len(events))
        await processor(events)

    async def redelivered() -> bool:
        return sum(seen) == 3

    await _run_until(_pipeline(kafka_bootstrap, topic, "second", counting), redelivered)
    assert await _state(engine, store_id) == before


async def test_offsets_are_committed_only_after_the_database_commit(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    topic = await _topic(kafka_bootstrap)
    await _send(producer, topic, [_order(store_id, "c1", 1), _order(store_id, "c2", 1)])
    processor = FunnelProcessor(engine, StoreRegistry([]))

    async def crash_after_commit(events: Sequence[SegmenterEvent]) -> None:
        await processor(events)  # the transaction commits here...
        raise SimulatedCrash  # ...and the process dies before the offsets are committed

    task = asyncio.create_task(_pipeline(kafka_bootstrap, topic, "g", crash_after_commit).run_forever())
    with pytest.raises(SimulatedCrash):
        await asyncio.wait_for(task, 30)
    crashed = await _state(engine, store_id)
    assert crashed["processed"] >= 1
    assert await committed(kafka_bootstrap, topic, "g") == 0

    # Restarted, the same group gets the batch again: the database dedupes it, then offsets move.
    async def offsets_committed() -> bool:
        return await committed(kafka_bootstrap, topic, "g") == 2

    await _run_until(_pipeline(kafka_bootstrap, topic, "g", processor), offsets_committed)
    after = await _state(engine, store_id)
    assert after["processed"] == 2
    assert after["profiles"] == [("c1", "first_time", 1, "10.00"), ("c2", "first_time", 1, "10.00")]
    assert after["transitions"] == 2
    assert after["outbox"] == 4  # per order: order_placed and stage_changed


async def test_a_failure_before_the_database_commit_leaves_no_trace(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    topic = await _topic(kafka_bootstrap)
    await _send(producer, topic, [_order(store_id, "c1", 1)])

    async def crash_before_commit(events: Sequence[SegmenterEvent]) -> None:
        raise SimulatedCrash

    task = asyncio.create_task(_pipeline(kafka_bootstrap, topic, "g", crash_before_commit).run_forever())
    with pytest.raises(SimulatedCrash):
        await asyncio.wait_for(task, 30)
    assert (await _state(engine, store_id))["processed"] == 0
    assert await committed(kafka_bootstrap, topic, "g") == 0

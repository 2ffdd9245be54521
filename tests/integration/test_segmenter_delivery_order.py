"""The same facts delivered in any order give the same state, through the real consumer (a real broker,
the consumer pipeline, the processor's batches) on a real Postgres, timers fired by the real timer worker.

A smaller sample of tests/unit/test_funnel_order.py's generated histories: each goes once in time order
into one store and once shuffled into another, as one customer whose events carry different keys (store
id, email, anonymous id, only an order id) until the identify links them. The profiles, the history, the
timers, the order rows and the products bought together must be the same.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import ColumnElement, Row, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import (
    copurchases,
    orders,
    processed_events,
    profiles,
    timers,
    transitions,
)
from services.segmenter.domain.profile import Profile
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreRegistry
from tests.builders import contract_bytes
from tests.kafka_helpers import storefront_pipeline
from tests.unit.test_funnel_order import NOW, sample_histories

pytestmark = pytest.mark.integration

SAMPLE = 8


def _in_store(events: list[StorefrontEvent], store_id: str) -> list[StorefrontEvent]:
    return [msgspec.structs.replace(e, store_id=store_id) for e in events]


async def _state(engine: AsyncEngine, store_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:

        async def store_rows(table: Table, names: str, *also: ColumnElement[bool]) -> Sequence[Row[Any]]:
            """These columns of the store's rows of the table."""
            chosen = select(*(table.c[n] for n in names.split())).where(table.c.store_id == store_id, *also)
            return (await conn.execute(chosen)).all()

        rows = await store_rows(profiles, "customer_id facts", profiles.c.merged_into.is_(None))
        history = await store_rows(
            transitions, "customer_id dimension from_value to_value occurred_at event_id"
        )
        due = await store_rows(timers, "customer_id kind due_at")
        order_rows = await store_rows(orders, "order_id customer_id placed_at total refunded counts")
        # As the complements read them: a pair an edit took back may stay at 0 (or not be there at all).
        together = await store_rows(
            copurchases, "product_id other_product_id orders", copurchases.c.orders > 0
        )
    # Health steps earned by time passing cite the timer, which names the store: the stores differ here.
    live = {
        r.customer_id: Profile.model_validate_json(_unnamed(json.dumps(r.facts), store_id)).model_dump(
            exclude={"store_id"}
        )
        for r in rows
    }
    return {
        "profiles": live,
        "transitions": sorted((*r[:-1], _unnamed(r.event_id, store_id)) for r in history),
        "timers": sorted(tuple(r) for r in due),
        "orders": sorted(tuple(r) for r in order_rows),
        "bought_together": sorted(tuple(r) for r in together),
    }


def _unnamed(text: str, store_id: str) -> str:
    return text.replace(f"timer:{store_id}:", "timer:<store>:")


async def _processed(engine: AsyncEngine, store_ids: list[str]) -> int:
    async with engine.connect() as conn:
        count: int = (
            await conn.execute(select(func.count()).where(processed_events.c.store_id.in_(store_ids)))
        ).scalar_one()
    return count


async def test_shuffled_histories_give_the_same_state_through_the_consumer(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    topic = f"storefront-order-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=3)
    pairs = []
    sent: list[StorefrontEvent] = []
    for i, (in_order, shuffled) in enumerate(sample_histories(SAMPLE)):
        a, b = f"{store_id}-{i}a", f"{store_id}-{i}b"
        pairs.append((a, b, len(in_order)))
        sent += _in_store(in_order, a) + _in_store(shuffled, b)
    # All stores interleaved on one topic: the consumer's batches mix them, as production's do.
    for event in sent:
        await producer.send_and_wait(topic, contract_bytes(event), key=event.partition_key.encode())

    stores = [s for a, b, _ in pairs for s in (a, b)]
    pipeline = storefront_pipeline(
        kafka_bootstrap,
        topic,
        f"g-{uuid.uuid4().hex[:6]}",
        FunnelProcessor(engine, StoreRegistry([])),
        max_records=7,
    )
    task = asyncio.create_task(pipeline.run_forever())
    try:
        deadline = asyncio.get_running_loop().time() + 120
        while await _processed(engine, stores) < len(sent):
            if task.done():
                task.result()
            assert asyncio.get_running_loop().time() < deadline, "the consumer did not process every event"
            await asyncio.sleep(0.2)
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 30)
    # Time passes: every timer due by NOW fires, as the worker does by wall time.
    worker = TimerWorker(engine, StoreRegistry([]), lambda: NOW)
    while await worker.fire_due():
        pass

    for a, b, n in pairs:
        expected, got = await _state(engine, a), await _state(engine, b)
        assert list(got["profiles"]) == ["42"], (b, n)
        differences = {
            k: (got["profiles"]["42"][k], expected["profiles"]["42"].get(k))
            for k in got["profiles"]["42"]
            if got["profiles"]["42"][k] != expected["profiles"]["42"].get(k)
        }
        assert differences == {}, (a, b)
        assert got == expected, (a, b)
        assert got["transitions"], a  # every history has at least one order: a first_time step

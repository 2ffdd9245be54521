"""The segmenter against a real Postgres (and Kafka where the test is about consuming): durable timers
with SKIP LOCKED, identity merges, replay into an empty database, two instances in one group."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters.tables import outbox, profiles, timers, transitions
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from shared.consumer import ConsumerPipeline
from shared.db import upgrade_to_head
from shared.funnel_events import decode_funnel_event
from shared.funnel_rules import FunnelRules
from shared.kafka import ensure_topics
from shared.registry_checks import sha256_hex
from shared.settings import REPO_ROOT, KafkaSettings
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreConfig, StoreRegistry
from tests.builders import contract_bytes, segmenter_event
from tests.kafka_helpers import committed, storefront_pipeline

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def registry(store_id: str, **rules: Any) -> StoreRegistry:
    funnel = FunnelRules.model_validate(rules) if rules else FunnelRules()
    store = StoreConfig(store_id=store_id, name="Test", api_key_sha256=sha256_hex("k"), funnel=funnel)
    return StoreRegistry([store])


def event(
    store_id: str, kind: str, payload: dict[str, Any] | None, at: datetime, **customer: Any
) -> StorefrontEvent:
    return segmenter_event(store_id, kind, at, customer, payload)


def order(store_id: str, who: dict[str, Any], order_id: str, at: datetime, *products: str) -> StorefrontEvent:
    items = [{"product_id": p, "price": "10.00"} for p in products or ("p1",)]
    payload = {"order_id": order_id, "total": f"{10 * len(items)}.00", "currency": "EUR", "line_items": items}
    return event(store_id, "order_placed", payload, at, **who)


def cart(store_id: str, who: dict[str, Any], cart_id: str, at: datetime) -> StorefrontEvent:
    payload = {
        "cart_id": cart_id,
        "currency": "EUR",
        "total": "30.00",
        "line_items": [{"product_id": "p7", "price": "30"}],
    }
    return event(store_id, "cart_updated", payload, at, **who)


async def funnel_events(engine: AsyncEngine, store_id: str) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value)
            .where(text("convert_from(key, 'UTF8') LIKE :p").bindparams(p=f"{store_id}:%"))
            .order_by(outbox.c.id)
        )
        return [decode_funnel_event(v) for v in rows.scalars()]


async def pending_timers(engine: AsyncEngine, store_id: str) -> dict[tuple[str, str], datetime]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(timers).where(timers.c.store_id == store_id))
        return {(r.customer_id, r.kind): r.due_at for r in rows.all()}


async def test_a_spend_past_what_an_order_may_carry_is_held_at_it(engine: AsyncEngine, store_id: str) -> None:
    """Three orders of the largest amount an order may carry (on-hold WooCommerce orders nobody pays, or a
    Segment batch with the write key from a store's page). Their sum did not fit the profile's
    numeric(14, 2): the database refused every later order of that customer, each went to the DLQ, and a
    hundred in a row on one partition stopped the segmenter."""
    biggest = "999999999999.99"
    orders = [
        event(
            store_id,
            "order_placed",
            {"order_id": f"o{i}", "total": biggest, "currency": "EUR"},
            T0,
            store_customer_id="c1",
        )
        for i in range(3)
    ]
    await FunnelProcessor(engine, registry(store_id))(orders)
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                select(profiles.c.orders_count, profiles.c.total_spent).where(profiles.c.store_id == store_id)
            )
        ).one()
    assert tuple(held) == (3, Decimal(biggest))


async def test_a_cart_abandonment_timer_fires_once_by_wall_clock(engine: AsyncEngine, store_id: str) -> None:
    stores = registry(store_id, cart_abandonment=20)
    await FunnelProcessor(engine, stores)(
        [cart(store_id, {"store_customer_id": "c1", "email": "c1@x.io"}, "k1", T0)]
    )
    assert await pending_timers(engine, store_id) == {("c1", "cart:k1"): T0 + timedelta(seconds=20)}

    # The worker serves every store: other tests' timers may fire too, so look only at this store's effects.
    clock = [T0 + timedelta(seconds=19)]
    worker = TimerWorker(engine, stores, lambda: clock[0])
    await worker.fire_due()
    # Not due yet: only the new contact (its email) has been published.
    assert [e.type for e in await funnel_events(engine, store_id)] == ["customer_updated"]
    clock[0] = T0 + timedelta(seconds=21)
    await worker.fire_due()
    await worker.fire_due()
    [abandoned] = [e for e in await funnel_events(engine, store_id) if e.type == "cart_abandoned"]
    assert abandoned.payload.cart_id == "k1"
    assert abandoned.payload.source == "timer"
    assert abandoned.occurred_at == T0 + timedelta(seconds=20)
    assert ("c1", "cart:k1") not in await pending_timers(engine, store_id)


async def test_an_order_before_the_timer_closes_the_cart(engine: AsyncEngine, store_id: str) -> None:
    stores = registry(store_id, cart_abandonment=20)
    who = {"store_customer_id": "c1"}
    processor = FunnelProcessor(engine, stores)
    await processor([cart(store_id, who, "k1", T0), order(store_id, who, "o1", T0 + timedelta(seconds=5))])
    worker = TimerWorker(engine, stores, lambda: T0 + timedelta(days=1))
    await worker.fire_due()
    assert [e.type for e in await funnel_events(engine, store_id)] == ["order_placed", "stage_changed"]


async def test_health_timers_move_customers_at_risk_with_two_workers_sharing_the_work(
    engine: AsyncEngine, store_id: str
) -> None:
    stores = registry(store_id)
    customers = [f"c{n}" for n in range(60)]
    await FunnelProcessor(engine, stores)(
        [order(store_id, {"store_customer_id": c}, f"{c}-o1", T0) for c in customers]
    )
    later = T0 + timedelta(days=91)
    workers = [TimerWorker(engine, stores, lambda: later, batch_size=7) for _ in range(2)]

    async def drain(worker: TimerWorker) -> int:
        total = 0
        while fired := await worker.fire_due():
            total += fired
        return total

    fired = await asyncio.gather(*(drain(w) for w in workers))
    assert all(fired), (
        f"both workers should have fired timers: {fired}"
    )  # (other tests' timers may be due too)
    async with engine.connect() as conn:
        moves = (
            await conn.execute(
                select(transitions.c.customer_id, transitions.c.to_value).where(
                    transitions.c.store_id == store_id, transitions.c.dimension == "health"
                )
            )
        ).all()
        healths = (
            await conn.execute(select(profiles.c.health).where(profiles.c.store_id == store_id))
        ).scalars()
        assert set(healths) == {"at_risk"}
    assert sorted(moves) == sorted((c, "at_risk") for c in customers)  # each exactly once
    # Each now waits for its lapse check, 180 days after the order.
    assert set((await pending_timers(engine, store_id)).values()) == {T0 + timedelta(days=180)}


async def test_an_anonymous_shopper_merges_into_the_known_customer_once(
    engine: AsyncEngine, store_id: str
) -> None:
    stores = registry(store_id)
    processor = FunnelProcessor(engine, stores)
    anon = {"anonymous_id": "a-1"}
    await processor([cart(store_id, anon, "k1", T0), order(store_id, anon, "o1", T0 + timedelta(minutes=5))])
    link = {"store_customer_id": "u-1", "anonymous_id": "a-1", "email": "Zoe@Example.com"}
    identify = event(store_id, "customer_upserted", None, T0 + timedelta(minutes=6), **link)
    await processor([identify])
    again = event(store_id, "identity_linked", {"previous_id": "a-1"}, T0 + timedelta(minutes=7), **link)
    await processor([again])
    await processor([order(store_id, {"email": "zoe@example.com "}, "o2", T0 + timedelta(days=3))])
    async with engine.connect() as conn:
        rows = {
            r.customer_id: r
            for r in (await conn.execute(select(profiles).where(profiles.c.store_id == store_id))).all()
        }
        history = (
            await conn.execute(
                select(transitions.c.customer_id, transitions.c.to_value).where(
                    transitions.c.store_id == store_id
                )
            )
        ).all()
    assert rows["anon:a-1"].merged_into == "u-1"
    survivor = rows["u-1"]
    assert (survivor.stage, survivor.orders_count) == ("repeat", 2)
    assert set(survivor.facts["identifiers"]) >= {"id:u-1", "anon:a-1", "email:zoe@example.com", "order:o1"}
    assert "email:zoe@example.com" not in rows  # the same email is the same customer, not a new profile
    # Both histories kept, now under the survivor.
    assert sorted(history) == [("u-1", "first_time"), ("u-1", "repeat")]


async def _drain(
    kafka_bootstrap: str,
    topic: str,
    group: str,
    processor: FunnelProcessor,
    total: int,
    engine: AsyncEngine,
    store_id: str,
    **pipeline_options: Any,
) -> None:
    """Consume the topic until the group has committed `total` records (`pipeline_options` go to
    `storefront_pipeline`)."""
    pipeline = storefront_pipeline(kafka_bootstrap, topic, group, processor, **pipeline_options)
    task = asyncio.create_task(pipeline.run_forever())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while await committed(kafka_bootstrap, topic, group) < total:
            assert not task.done(), task
            assert asyncio.get_running_loop().time() < deadline, "the topic was not consumed in time"
            await asyncio.sleep(0.2)
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 20)


def _history(store_id: str, customers: int, rng: random.Random) -> list[StorefrontEvent]:
    """A realistic mix: buyers, repeaters, refunds, surveys, carts, anonymous shoppers who sign up."""
    events: list[StorefrontEvent] = []
    for n in range(customers):
        who: dict[str, Any] = {
            "store_customer_id": f"c{n}",
            "email": f"c{n}@example.com",
            "first_name": f"N{n}",
        }
        at = T0 + timedelta(hours=n)
        if n % 5 == 0:
            anon = {"anonymous_id": f"a{n}"}
            events.append(cart(store_id, anon, f"k{n}", at))
            events.append(
                event(store_id, "customer_upserted", None, at + timedelta(minutes=1), **who, **anon)
            )
        events.append(event(store_id, "customer_upserted", None, at, **who))
        for k in range(rng.randint(0, 4)):
            events.append(
                order(
                    store_id,
                    who,
                    f"c{n}-o{k}",
                    at + timedelta(days=20 * k),
                    *rng.sample(["p1", "p2", "p3", "p4"], 2),
                )
            )
        if n % 7 == 0:
            events.append(
                event(
                    store_id,
                    "order_refunded",
                    {"order_id": f"c{n}-o0", "amount": "20.00", "currency": "EUR"},
                    at + timedelta(days=90),
                    **who,
                )
            )
        if n % 4 == 0:
            answers = [
                {"statement_id": "conative.buy_again", "agree": True},
                {"statement_id": "action.recommend", "score": 5},
            ]
            events.append(
                event(
                    store_id,
                    "survey_answered",
                    {"survey_id": "s", "answers": answers, "csat": 4},
                    at + timedelta(days=61),
                    **who,
                )
            )
    return events


async def _snapshot(engine: AsyncEngine, store_id: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        facts = {
            r.customer_id: r.facts
            for r in (await conn.execute(select(profiles).where(profiles.c.store_id == store_id))).all()
        }
        moves = (
            await conn.execute(
                select(
                    transitions.c.customer_id,
                    transitions.c.dimension,
                    transitions.c.from_value,
                    transitions.c.to_value,
                    transitions.c.reason,
                    transitions.c.event_id,
                    transitions.c.occurred_at,
                ).where(transitions.c.store_id == store_id)
            )
        ).all()
    return facts, sorted(tuple(m) for m in moves)


async def _topic(kafka_bootstrap: str, partitions: int) -> str:
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    await ensure_topics(
        KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=partitions
    )
    return topic


async def _publish(producer: AIOKafkaProducer, topic: str, events: Sequence[StorefrontEvent]) -> None:
    await asyncio.gather(
        *[await producer.send(topic, contract_bytes(e), key=e.partition_key.encode()) for e in events]
    )


async def test_replaying_the_topic_into_an_empty_database_gives_the_same_state(
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,
    engine: AsyncEngine,
    postgres_server: PostgresServer,
    store_id: str,
) -> None:
    events = _history(store_id, 40, random.Random(7))
    topic = await _topic(kafka_bootstrap, 3)
    await _publish(producer, topic, events)
    stores = registry(store_id)
    await _drain(
        kafka_bootstrap, topic, "first", FunnelProcessor(engine, stores), len(events), engine, store_id
    )
    original = await _snapshot(engine, store_id)
    assert len(original[0]) >= 40
    assert original[1]

    url = postgres_server.create_database(f"replay_{uuid.uuid4().hex[:8]}")
    for service in ("segmenter",):
        await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / service / "migrations", url)
    empty = create_async_engine(url)
    try:
        await _drain(
            kafka_bootstrap, topic, "replay", FunnelProcessor(empty, stores), len(events), empty, store_id
        )
        replayed = await _snapshot(empty, store_id)
    finally:
        await empty.dispose()
    assert replayed[0] == original[0]
    assert replayed[1] == original[1]


async def test_two_instances_share_the_partitions_and_a_stop_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    await two_instances_and_a_stop_mid_stream(kafka_bootstrap, producer, engine, store_id, group="two")


async def two_instances_and_a_stop_mid_stream(
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,
    engine: AsyncEngine,
    store_id: str,
    *,
    group: str,
    claim_ahead: bool = False,
) -> None:
    """Two instances in one group consume 300 orders; one leaves mid-stream. Every customer ends with its
    three orders and three moves, none lost, none twice (with `claim_ahead`, each instance sends its next
    batch's claim ahead, as the service does)."""
    customers = 100
    events = [
        order(store_id, {"store_customer_id": f"c{n}"}, f"c{n}-o{k}", T0 + timedelta(days=k))
        for k in range(3)
        for n in range(customers)
    ]
    topic = await _topic(kafka_bootstrap, 4)
    stores = registry(store_id)
    seen: dict[str, int] = {"a": 0, "b": 0}

    class Counting(FunnelProcessor):
        def __init__(self, name: str) -> None:
            super().__init__(engine, stores, hold_connection=claim_ahead, claim_ahead=claim_ahead)
            self.name = name

        async def __call__(self, batch: Sequence[StorefrontEvent]) -> None:
            seen[self.name] += len(batch)
            await asyncio.sleep(0.05)  # slow enough that both instances hold partitions mid-stream
            await super().__call__(batch)

    processors = {name: Counting(name) for name in seen}

    def pipeline(name: str) -> ConsumerPipeline[StorefrontEvent]:
        processor = processors[name]
        return storefront_pipeline(
            kafka_bootstrap,
            topic,
            group,
            processor,
            max_records=20,
            prepare=processor.send_ahead if claim_ahead else None,
            unprepare=processor.drop_ahead if claim_ahead else None,
            announce=processor.announce if claim_ahead else None,
            max_partition_fetch_bytes=4096,
        )

    a, b = pipeline("a"), pipeline("b")
    task_a = asyncio.create_task(a.run_forever())
    task_b = asyncio.create_task(b.run_forever())
    deadline = asyncio.get_running_loop().time() + 60
    while not (a.assignment() and b.assignment()):  # both joined: the group shared the partitions
        assert asyncio.get_running_loop().time() < deadline, "both instances should get partitions"
        await asyncio.sleep(0.05)
    await _publish(producer, topic, events)
    while seen["a"] == 0 or seen["b"] == 0:
        assert asyncio.get_running_loop().time() < deadline, f"both instances should get partitions: {seen}"
        await asyncio.sleep(0.05)
    a.stop_after_batch()  # one instance leaves mid-stream; the other takes over its partitions
    await asyncio.wait_for(task_a, 30)
    try:
        while await committed(kafka_bootstrap, topic, group) < len(events):
            assert asyncio.get_running_loop().time() < deadline, "the survivor did not finish the topic"
            await asyncio.sleep(0.2)
    finally:
        b.stop_after_batch()
        await asyncio.wait_for(task_b, 30)
        for processor in processors.values():
            await processor.close()
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                select(profiles.c.orders_count, profiles.c.stage).where(profiles.c.store_id == store_id)
            )
        ).all()
        moves = (
            await conn.execute(select(transitions.c.customer_id).where(transitions.c.store_id == store_id))
        ).all()
    assert sorted(counts) == [(3, "loyal")] * customers
    assert len(moves) == 3 * customers  # first_time, repeat, loyal: nothing lost, nothing twice

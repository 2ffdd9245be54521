"""Timers wait for the consumer, against a real broker and a real PostgreSQL: after an outage, a cart's
abandonment timer that came due while the customer's order waited in Kafka fires after that order is
handled, and so finds the cart closed instead of telling a buyer their cart was abandoned
(services/segmenter/entrypoints/timers.py, shared/consumer_wait.py, shared/consumer_progress.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import consumer_progress as progress_rows
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from shared import consumer_wait
from shared.consumer import ConsumerPipeline
from shared.consumer_progress import ReadProgress
from shared.consumer_wait import LATE_RECORDS, ConsumerWait
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings
from shared.storefront_event_structs import StorefrontEvent as SegmenterEvent
from tests.builders import contract_bytes
from tests.integration.test_segmenter_engine import cart, funnel_events, order, pending_timers, registry
from tests.kafka_helpers import partitions, send_stamped, storefront_pipeline
from tests.polling import eventually, now_true

pytestmark = pytest.mark.integration

ANN = {"store_customer_id": "ann", "email": "ann@example.com"}


def _waiting(
    topic: str,
    read_before: Callable[[], Mapping[TopicPartition, datetime]],
    partitions: Callable[[], int | None] = lambda: 2,
) -> ConsumerWait:
    return ConsumerWait("timers", progress_rows, topic, read_before, partitions)


async def _topic(kafka_bootstrap: str) -> str:
    topic = f"storefront-timers-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
    return topic


async def _send(
    producer: AIOKafkaProducer, topic: str, event: SegmenterEvent, sent_at: datetime
) -> TopicPartition:
    """As ingest sends it, stamped with the time it was accepted (here one in the past: the outage's)."""
    return await send_stamped(producer, topic, contract_bytes(event), event.partition_key.encode(), sent_at)


async def _cart_timers(engine: AsyncEngine, store_id: str) -> list[str]:
    timers = await pending_timers(engine, store_id)
    return sorted(kind for (who, kind) in timers if who == "ann" and kind.startswith("cart:"))


async def _abandoned(engine: AsyncEngine, store_id: str) -> int:
    return sum(1 for e in await funnel_events(engine, store_id) if e.type == "cart_abandoned")


async def _rounds(timers: TimerWorker) -> None:
    while await timers.fire_due():
        pass


@pytest.mark.parametrize("waits", [True, False], ids=["waiting for the consumer", "by the clock alone"])
async def test_a_cart_timer_due_while_the_order_waits_in_kafka_fires_after_the_order(
    engine: AsyncEngine, store_id: str, kafka_bootstrap: str, producer: AIOKafkaProducer, waits: bool
) -> None:
    # Two hours ago ann filled a cart; half an hour ago she ordered. Ingest took both, but the segmenter's
    # database was away meanwhile: the cart was handled before it went, the order waits in Kafka. The
    # cart's timer (an hour after its last activity) is due by the wall clock.
    now = datetime.now(UTC)
    topic = await _topic(kafka_bootstrap)
    # The engine tests' cart (cart k1 of product p7) and an order of that product.
    abandoned = cart(store_id, ANN, "k1", now - timedelta(hours=2))
    ordered = order(store_id, ANN, "o1", now - timedelta(minutes=30), "p7")
    anns = await _send(producer, topic, abandoned, now - timedelta(hours=2))
    await _send(producer, topic, ordered, now - timedelta(minutes=30))

    processor = FunnelProcessor(engine, registry(store_id))
    back = asyncio.Event()
    handled: list[int] = []

    async def handle(events: Sequence[SegmenterEvent]) -> None:
        if handled:
            await back.wait()  # the database is away for the second batch
        await processor(events)
        handled.append(len(events))

    pipeline = storefront_pipeline(
        kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", handle, max_records=1, progress=ReadProgress()
    )
    # The worker serves every store: other tests' timers may fire too; only this store's rows are read.
    timers = TimerWorker(
        engine,
        registry(store_id),
        lambda: datetime.now(UTC),
        consumer=_waiting(topic, pipeline.read_before, lambda: pipeline.partition_count(topic))
        if waits
        else None,
    )
    running = asyncio.create_task(pipeline.run_forever())
    try:
        # The cart's batch committed.
        await eventually(
            lambda: now_true(handled == [1] and anns in pipeline.read_before()), 30, "the cart handled"
        )
        assert await _cart_timers(engine, store_id) == ["cart:k1"]
        # The database is back for the timers first (they run on their own): a round now.
        await _rounds(timers)
        if waits:
            # Ann's partition is read up to the cart (sent two hours ago): her timer is left due.
            assert await _cart_timers(engine, store_id) == ["cart:k1"]
            assert await _abandoned(engine, store_id) == 0
        else:
            # The defect: the buyer's cart is abandoned (and the email sent) before her order is read.
            assert await _cart_timers(engine, store_id) == []
            assert await _abandoned(engine, store_id) == 1
        back.set()
        await eventually(lambda: now_true(handled == [1, 1]), 30, "the order handled")
        tps = set(await partitions(kafka_bootstrap, topic))
        # Both partitions read to their end (the other never had a record): read up to their last fetch.
        await eventually(
            lambda: now_true(
                set(pipeline.read_before()) == tps and min(pipeline.read_before().values()) > now
            ),
            30,
            "both partitions caught up",
        )

        async def fired() -> bool:
            await _rounds(timers)
            return await _cart_timers(engine, store_id) == []

        await eventually(fired, 30, "the cart's timer gone")
        # Waiting, the timer found the cart closed by the order: nobody is told it was abandoned.
        assert await _abandoned(engine, store_id) == (0 if waits else 1)
    finally:
        pipeline.stop_after_batch()
        back.set()
        await asyncio.wait_for(running, 30)


async def test_timers_wait_for_the_partition_another_member_reads(engine: AsyncEngine, store_id: str) -> None:
    # Another instance holds the topic's second partition and has read it only up to a day ago (a backlog
    # after its restart); this one's partition is read up to now.
    now = datetime.now(UTC)
    topic = f"storefront-timers-{uuid.uuid4().hex[:8]}"
    mine, theirs = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with engine.begin() as conn:
        await consumer_wait.record(conn, progress_rows, {theirs: now - timedelta(days=1)})
    timers = TimerWorker(
        engine, registry(store_id), lambda: now, consumer=_waiting(topic, lambda: {mine: now})
    )
    processor = FunnelProcessor(engine, registry(store_id))
    # Carts whose timers (an hour after their last activity) are due two days ago, an hour ago, and just
    # before the other partition's bound once it has moved to a minute ago: within the margin for records
    # that reach the broker after their time.
    hour = timedelta(hours=1)
    edge = now - timedelta(minutes=1) - LATE_RECORDS / 2 - hour
    for cart_id, at in (("old", now - timedelta(days=2) - hour), ("new", now - 2 * hour), ("edge", edge)):
        await processor([cart(store_id, ANN, cart_id, at)])
    await _rounds(timers)
    assert await _cart_timers(engine, store_id) == ["cart:edge", "cart:new"]  # due after their bound
    async with engine.begin() as conn:
        # A member that knows less of a partition than the table does (it took it over in a rebalance)
        # does not move its bound back.
        await consumer_wait.record(conn, progress_rows, {theirs: now - timedelta(days=2)})
        assert await consumer_wait.least(conn, progress_rows, topic, 2) == (2, now - timedelta(days=1))
        await consumer_wait.record(conn, progress_rows, {theirs: now - timedelta(minutes=1)})
    await _rounds(timers)
    assert await _cart_timers(engine, store_id) == ["cart:edge"]
    # Read to within the margin of the clock: the consumers keep up, and timers go by the clock.
    async with engine.begin() as conn:
        await consumer_wait.record(conn, progress_rows, {theirs: now - LATE_RECORDS / 2})
    await _rounds(timers)
    assert await _cart_timers(engine, store_id) == []
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(progress_rows.c.partition, progress_rows.c.read_before).where(
                    progress_rows.c.topic == topic
                )
            )
        ).all()
    # Each round recorded this member's bound beside the other's.
    assert dict(rows) == {0: now, 1: now - LATE_RECORDS / 2}


async def test_a_partition_without_a_bound_holds_every_timer(engine: AsyncEngine, store_id: str) -> None:
    # The first start on a backlog: this member has read its partition to now, but no member has recorded
    # the other one yet (its owner has handled no batch of it). It may hold the order behind any cart.
    now = datetime.now(UTC)
    topic = f"storefront-timers-{uuid.uuid4().hex[:8]}"
    mine, theirs = TopicPartition(topic, 0), TopicPartition(topic, 1)
    before_metadata = ConsumerWait("timers", progress_rows, topic, lambda: {}, lambda: None, records=False)
    async with engine.begin() as conn:
        # Before the consumer knows the topic (not in its group yet, or no broker since the start), the
        # table alone says, and an empty one holds nothing back.
        assert await before_metadata.until(conn, now) == ({}, now)
    timers = TimerWorker(
        engine, registry(store_id), lambda: now, consumer=_waiting(topic, lambda: {mine: now})
    )
    processor = FunnelProcessor(engine, registry(store_id))
    await processor([cart(store_id, ANN, "old", now - timedelta(days=2))])
    await _rounds(timers)  # one partition of two has a bound
    assert await _cart_timers(engine, store_id) == ["cart:old"]
    assert REGISTRY.get_sample_value("consumer_wait_seconds", {"worker": "timers"}) == float("inf")
    async with engine.begin() as conn:
        # A row of a partition the topic no longer has (made again with fewer) is not one of its bounds.
        await consumer_wait.record(conn, progress_rows, {TopicPartition(topic, 2): now})
    await _rounds(timers)
    assert await _cart_timers(engine, store_id) == ["cart:old"]
    async with engine.begin() as conn:
        await consumer_wait.record(conn, progress_rows, {theirs: now - LATE_RECORDS / 2})
    await _rounds(timers)  # every partition read to within the margin: by the clock
    assert await _cart_timers(engine, store_id) == []
    assert REGISTRY.get_sample_value("consumer_wait_seconds", {"worker": "timers"}) == 0


async def test_in_a_backlog_a_partition_with_nothing_to_read_is_read_to_its_end_before_the_backlog_drains(
    kafka_bootstrap: str, producer: AIOKafkaProducer, store_id: str
) -> None:
    # A backlog on ann's partition (an outage's events, a second apart, read ahead batch after batch as the
    # segmenter reads them); the other partition has no record at all. Its bound must not wait for the
    # backlog to drain: until it has one, no timer of any partition fires. And ann's partition is read only
    # as far as the batches handled, though the consumer has taken all of it (read ahead).
    now = datetime.now(UTC)
    topic = await _topic(kafka_bootstrap)
    start = now - timedelta(hours=1)
    stamps = [start + timedelta(seconds=i) for i in range(40)]
    sent = {await _send(producer, topic, cart(store_id, ANN, f"k{i}", at), at) for i, at in enumerate(stamps)}
    [anns] = sent
    [quiet] = set(await partitions(kafka_bootstrap, topic)) - sent
    seen: list[tuple[datetime, dict[TopicPartition, datetime]]] = []
    handled: list[int] = []
    pipeline: ConsumerPipeline[SegmenterEvent]

    async def handle(events: Sequence[SegmenterEvent]) -> None:
        # Before this batch commits: the earliest record it holds, and the bounds.
        seen.append((min(e.occurred_at for e in events), pipeline.read_before()))
        await asyncio.sleep(0.25)  # the database's time for a batch
        handled.append(len(events))

    pipeline = storefront_pipeline(
        kafka_bootstrap,
        topic,
        f"g-{uuid.uuid4().hex[:8]}",
        handle,
        max_records=4,
        prepare=lambda events: None,  # read ahead, as the segmenter does
        progress=ReadProgress(),
    )
    running = asyncio.create_task(pipeline.run_forever())
    try:
        await eventually(lambda: now_true(sum(handled) == len(stamps)), 30, "the backlog handled")
    finally:
        pipeline.stop_after_batch()
        await asyncio.wait_for(running, 30)
    assert len(seen) >= 10  # batches of four at most
    # Read to its end (its last fetch's time) within a caught-up check or two of the backlog's start (they
    # run every half second at most), with half of it or more still to come.
    quiet_from = next((i for i, (_, bounds) in enumerate(seen) if quiet in bounds), None)
    assert quiet_from is not None, [sorted(bounds) for _, bounds in seen]
    assert quiet_from <= 5
    assert seen[quiet_from][1][quiet] > now
    for first, bounds in seen:
        # Never past what was handled: every record before the batch in hand, none of it.
        assert anns not in bounds or bounds[anns] < first

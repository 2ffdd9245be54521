"""The sender waits for the consumer, against a real broker, a real PostgreSQL and a real SMTP server: after
an outage of the notifier, an abandoned-cart email planned from the backlog does not go out before the order
queued behind its trigger is read, and that order then exits the flow (shared/consumer_wait.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.notifier.adapters.tables import consumer_progress
from services.notifier.entrypoints.processor import MessagePlanner
from services.notifier.entrypoints.sender import MessageSender
from shared import consumer_wait
from shared.consumer import ConsumerPipeline
from shared.consumer_progress import ReadProgress
from shared.consumer_wait import HELD, LATE_RECORDS, ConsumerWait
from shared.funnel_events import FunnelEvent, decode_funnel_event, encode_funnel_event
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings
from shared.stores import StoreRegistry
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store
from tests.integration.test_notifier_delivery import CART, ORDER
from tests.kafka_helpers import group_consumer, send_stamped
from tests.polling import eventually, now_true

pytestmark = pytest.mark.integration


async def _send(
    producer: AIOKafkaProducer, topic: str, event: FunnelEvent, sent_at: datetime
) -> TopicPartition:
    """As the segmenter's outbox relay publishes it, stamped with the time it did (here one in the past)."""
    key = f"{event.store_id}:{event.customer_id}".encode()
    return await send_stamped(producer, topic, encode_funnel_event(event), key, sent_at)


@pytest.mark.parametrize("waits", [True, False], ids=["waiting for the consumer", "by the clock alone"])
async def test_a_cart_email_planned_from_a_backlog_waits_for_the_order_behind_it(
    engine: AsyncEngine,
    store_id: str,
    smtp_server: SmtpServer,
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,
    waits: bool,
) -> None:
    # An hour ago the segmenter found kim's cart abandoned; half an hour ago she ordered. The notifier was
    # down meanwhile: both funnel events wait in Kafka, and it reads them now, the order's batch held up.
    now = datetime.now(UTC)
    notifier = Notifier(engine, dev_store(store_id), Clock(now), smtp_server.host, smtp_server.port)
    topic = f"funnel-waits-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
    abandoned = funnel_event("cart_abandoned", store_id, "kim", now - timedelta(hours=1), CART)
    ordered = funnel_event(
        "order_placed",
        store_id,
        "kim",
        now - timedelta(minutes=30),
        ORDER,
        last_order_at=(now - timedelta(minutes=30)).isoformat(),
    )
    kims = await _send(producer, topic, abandoned, now - timedelta(hours=1))
    await _send(producer, topic, ordered, now - timedelta(minutes=30))

    planner = MessagePlanner(engine, StoreRegistry([notifier.store]), notifier.clock)
    back = asyncio.Event()
    handled: list[int] = []

    async def handle(events: Sequence[FunnelEvent]) -> None:
        if handled:
            await back.wait()  # the order's batch is held up
        await planner(events)
        handled.append(len(events))

    group = f"g-{uuid.uuid4().hex[:8]}"
    pipeline: ConsumerPipeline[FunnelEvent] = ConsumerPipeline(
        name="test-notifier",
        consumer_factory=lambda: group_consumer(kafka_bootstrap, topic, group),
        dlq_producer=lambda: None,
        decode=decode_funnel_event,
        handle=handle,
        max_records=1,
        progress=ReadProgress(),
    )
    waiting = ConsumerWait(
        "sender", consumer_progress, topic, pipeline.read_before, lambda: pipeline.partition_count(topic)
    )
    sender = MessageSender(**notifier.sender_settings(), consumer=waiting if waits else None)
    running = asyncio.create_task(pipeline.run_forever())
    try:
        await eventually(
            lambda: now_true(handled == [1] and kims in pipeline.read_before()), 30, "the cart's event read"
        )
        [cart] = [r for r in await notifier.rows("kim") if r.flow == "abandoned_cart"]
        assert cart.status == "pending"
        await sender.send_due()
        [cart] = [r for r in await notifier.rows("kim") if r.flow == "abandoned_cart"]
        if waits:
            # Funnel events are read up to an hour ago only: the email, due now, waits.
            assert cart.status == "pending"
        else:
            # The defect: the email goes to a buyer whose order is queued behind it.
            assert cart.status == "sent"
        back.set()
        await eventually(lambda: now_true(handled == [1, 1]), 30, "the order's event read")

        async def decided() -> bool:
            await sender.send_due()
            [cart] = [r for r in await notifier.rows("kim") if r.flow == "abandoned_cart"]
            return bool(cart.status != "pending")

        await eventually(decided, 30, "the cart email decided")
        [cart] = [r for r in await notifier.rows("kim") if r.flow == "abandoned_cart"]
        sent_to_kim = [m for m in smtp_server.messages if m["To"] == "kim@example.com"]
        if waits:
            assert (cart.status, cart.skip_reason) == ("skipped", "exited_ordered")
            assert sent_to_kim == []
        else:
            assert cart.status == "sent"
            assert len(sent_to_kim) == 1
    finally:
        pipeline.stop_after_batch()
        back.set()
        await asyncio.wait_for(running, 30)
        await notifier.http.aclose()


async def test_the_express_sender_reads_the_progress_and_records_none(engine: AsyncEngine) -> None:
    # The express sender shares its process's consumer with the main sender, which records its progress.
    now = datetime.now(UTC)
    topic = f"funnel-waits-{uuid.uuid4().hex[:8]}"
    mine, theirs = TopicPartition(topic, 0), TopicPartition(topic, 1)
    express = ConsumerWait(
        "express-sender", consumer_progress, topic, lambda: {mine: now}, lambda: 2, records=False
    )

    async def recorded(conn: AsyncConnection) -> list[int]:
        query = select(consumer_progress.c.partition).where(consumer_progress.c.topic == topic)
        return list((await conn.execute(query)).scalars())

    async with engine.begin() as conn:
        assert await express.until(conn, now) == ({}, HELD)  # no partition has a bound yet
        await consumer_wait.record(conn, consumer_progress, {theirs: now - timedelta(hours=1)})
        assert await express.until(conn, now) == ({}, HELD)  # its own is for the main sender to record
        assert await recorded(conn) == [1]
        await consumer_wait.record(conn, consumer_progress, {mine: now})  # as the main sender does
        assert await express.until(conn, now) == ({}, now - timedelta(hours=1) - LATE_RECORDS)

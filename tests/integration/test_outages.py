"""Outages of the real dependencies: the services say so, lose nothing they acknowledged, and recover by
themselves when the dependency returns. Each test starts (and stops) a server of its own to break."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.devstack.kafka import start_kafka
from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import start_postgres
from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from services.ingest.sources import shopify
from services.segmenter.adapters.tables import processed_events
from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.db import upgrade_to_head
from shared.events import OrderPlacedEvent, StorefrontEvent, decode_event, encode_event
from shared.kafka import ensure_topics
from shared.settings import REPO_ROOT, KafkaSettings
from shared.storefront_event_structs import StorefrontEvent as SegmenterEvent
from shared.stores import StoreRegistry
from tests.examples import source_example
from tests.kafka_helpers import committed, storefront_pipeline

pytestmark = pytest.mark.integration


def _orders(store_id: str, n: int) -> list[StorefrontEvent]:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    return [
        OrderPlacedEvent.model_validate(
            {
                "event_id": f"{store_id}-{i}",
                "store_id": store_id,
                "customer": {"store_customer_id": f"c{i % 40}"},
                "occurred_at": at + timedelta(minutes=i),
                "received_at": at + timedelta(minutes=i),
                "source": "api",
                "payload": {"order_id": f"{store_id}-o{i}", "total": "5.00", "currency": "EUR"},
            }
        )
        for i in range(n)
    ]


async def test_postgres_going_away_mid_stream_loses_nothing_and_the_consumer_resumes_by_itself(
    kafka_bootstrap: str, producer: AIOKafkaProducer, stack_dir: Path, store_id: str
) -> None:
    # Under the session's stack directory: the unprivileged postgres account can reach it.
    run_dir = stack_dir / f"pg-outage-{store_id}"
    [port] = free_ports(1)
    server = start_postgres(run_dir, port, fast=True, die_with_parent=True)
    engine = create_async_engine(server.url, pool_pre_ping=True)
    try:
        await asyncio.to_thread(
            upgrade_to_head, REPO_ROOT / "services" / "segmenter" / "migrations", server.url
        )
        topic = f"outage-{uuid.uuid4().hex[:8]}"
        await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
        events = _orders(store_id, 300)
        processor = FunnelProcessor(engine, StoreRegistry([]))

        async def slowly(batch: Sequence[SegmenterEvent]) -> None:
            await asyncio.sleep(0.05)
            await processor(batch)

        pipeline = storefront_pipeline(
            kafka_bootstrap, topic, "g", slowly, max_records=10, max_partition_fetch_bytes=2048
        )
        task = asyncio.create_task(pipeline.run_forever())
        await asyncio.gather(
            *[await producer.send(topic, encode_event(e), key=e.partition_key.encode()) for e in events]
        )
        while await committed(kafka_bootstrap, topic, "g") < 30:
            assert not task.done()
            await asyncio.sleep(0.05)

        await asyncio.to_thread(server.stop)  # Postgres goes away mid-stream
        stalled = await committed(kafka_bootstrap, topic, "g")
        await asyncio.sleep(2.0)
        assert await committed(kafka_bootstrap, topic, "g") <= stalled + 10  # at most the batch in flight
        assert not task.done(), "a transient outage must not crash the consumer"

        await asyncio.to_thread(start_postgres, run_dir, port, fast=True, die_with_parent=True)
        deadline = asyncio.get_running_loop().time() + 60
        while await committed(kafka_bootstrap, topic, "g") < len(events):
            assert asyncio.get_running_loop().time() < deadline, "the consumer did not recover"
            await asyncio.sleep(0.2)
        pipeline.stop_after_batch()
        await asyncio.wait_for(task, 20)
        async with engine.connect() as conn:
            done = await conn.execute(select(func.count()).where(processed_events.c.store_id == store_id))
            assert done.scalar_one() == len(events)
    finally:
        await engine.dispose()
        await asyncio.to_thread(server.stop)


async def test_ingest_answers_503_while_kafka_is_away_and_recovers_when_it_starts(stack_dir: Path) -> None:
    run_dir = stack_dir / f"kafka-late-{uuid.uuid4().hex[:8]}"
    port, controller = free_ports(2)
    settings = IngestSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml",
        kafka_topic_partitions=1,
    )
    body = json.dumps(source_example("shopify", "orders.create__order_with_customer")).encode()
    headers = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": f"late-{uuid.uuid4()}",
    }
    app = create_app(settings)
    broker = None
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as client,
    ):
        assert (await client.post("/webhooks/shopify", content=body, headers=headers)).status_code == 503
        try:
            broker = await asyncio.to_thread(start_kafka, run_dir, port, controller, die_with_parent=True)
            deadline = asyncio.get_running_loop().time() + 60
            while (await client.get("/readyz")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "ingest did not reconnect by itself"
                await asyncio.sleep(0.25)
            accepted = await client.post("/webhooks/shopify", content=body, headers=headers)
            assert accepted.status_code == 200, accepted.text
            consumer = AIOKafkaConsumer(
                "storefront-events",
                bootstrap_servers=settings.kafka_bootstrap_servers,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                record = await asyncio.wait_for(consumer.getone(), 20)
            finally:
                await consumer.stop()
            assert record.value is not None
            assert decode_event(record.value).event_id == f"shopify:{headers['X-Shopify-Event-Id']}"
        finally:
            if broker is not None:
                await asyncio.to_thread(broker.stop)

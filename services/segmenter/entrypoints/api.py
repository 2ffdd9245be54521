"""The segmenter process: the consumer, the outbox relay and the read API for marketing tools."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.segmenter.adapters.tables import outbox
from services.segmenter.entrypoints import routes
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from services.segmenter.settings import SegmenterSettings
from shared.consumer import ConsumerPipeline, DlqLimit
from shared.db import build_engine, database_reachable
from shared.events import decode_event
from shared.kafka import (
    FUNNEL_EVENTS,
    STOREFRONT_EVENTS,
    build_consumer,
    build_producer,
    dlq_topic,
    ensure_topics,
    kafka_reachable,
    start_forever,
)
from shared.logging import get_logger
from shared.outbox import OutboxRelay
from shared.registry_checks import sha256_hex
from shared.stores import StoreRegistry
from shared.web import (
    install_client_rate_limit,
    install_error_handlers,
    install_input_guard,
    install_metrics_middleware,
    ops_router,
)
from shared.workers import WorkerGroup

log = get_logger(__name__)

OUTBOX_LOCK_KEY = 0x5E6_0001  # advisory lock id of the segmenter's outbox relay
SEGMENTER_GC_THRESHOLD = 200_000  # allocations between two young-generation collections


class _Kafka:
    """The process's one producer (outbox relay and dead letters), connected in the background."""

    producer: AIOKafkaProducer | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(settings: SegmenterSettings, *, clock: Callable[[], datetime] = _utcnow) -> FastAPI:
    kafka = _Kafka()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A backlog batch keeps some hundred thousand young objects alive (events, profiles, rows), and at
        # the services' default first threshold (shared/cli.py) the collector walked them every few
        # thousand events: a tenth of a 3,000-event batch's time in-process, none of it garbage.
        gc.set_threshold(SEGMENTER_GC_THRESHOLD, *gc.get_threshold()[1:])
        stores = StoreRegistry.load(
            settings.stores_file, allow_placeholder_secrets=settings.environment != "production"
        )
        app.state.stores = stores
        service_key = settings.effective_service_api_key()
        app.state.service_key_sha256 = sha256_hex(service_key) if service_key else None
        engine = build_engine(settings, custom_plans=True)
        app.state.engine = engine
        relay = OutboxRelay(
            name="segmenter",
            engine=engine,
            table=outbox,
            producer=lambda: kafka.producer,
            lock_key=OUTBOX_LOCK_KEY,
        )
        # Timers fire in rounds of 100: a round runs on the consumer's event loop, and a round of 500
        # held a live event's batch back for the best part of 100 ms. The worker goes on at once while
        # its rounds are full, so a backlog drains as fast.
        timers = TimerWorker(engine, stores, clock, batch_size=100, on_outbox_written=relay.wake)
        pipeline: ConsumerPipeline[object] = ConsumerPipeline(
            name="segmenter",
            consumer_factory=lambda: build_consumer(
                settings, settings.segmenter_group_id, [STOREFRONT_EVENTS], "segmenter"
            ),
            dlq_producer=lambda: kafka.producer,
            decode=decode_event,
            handle=FunnelProcessor(engine, stores, on_outbox_written=relay.wake),  # type: ignore[arg-type]
            dlq_limit=DlqLimit(settings.segmenter_dlq_max_consecutive_invalid),
            max_records=settings.segmenter_max_batch,
        )
        app.state.pipeline = pipeline
        workers = WorkerGroup()
        app.state.workers = workers

        async def connect_producer() -> None:
            producer = await start_forever(lambda: build_producer(settings, "segmenter"), "producer", log)
            await ensure_topics(settings, [STOREFRONT_EVENTS, FUNNEL_EVENTS, dlq_topic(STOREFRONT_EVENTS)])
            kafka.producer = producer
            workers.start("consumer", pipeline.run_forever())
            workers.start("outbox-relay", relay.run_forever())

        workers.start("timers", timers.run_forever())

        workers.start("kafka-connect", connect_producer())
        try:
            yield
        finally:
            await workers.stop()
            if kafka.producer is not None:
                await kafka.producer.stop()
            await engine.dispose()

    app = FastAPI(
        title="Loyalty Funnel segmenter",
        version="1",
        description="Each customer's place in the loyalty funnel, kept in real time from storefront events.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_input_guard(app)
    install_client_rate_limit(app, "segmenter", settings)
    install_metrics_middleware(app)

    async def readiness() -> dict[str, bool]:
        producer = kafka.producer
        return {
            "postgres": await database_reachable(app.state.engine),
            "kafka": producer is not None and await kafka_reachable(producer),
            "consumer": app.state.pipeline.running,
        }

    app.include_router(ops_router(readiness))

    app.include_router(routes.router)
    return app

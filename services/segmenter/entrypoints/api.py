"""The segmenter process: the consumer, the outbox relay and the read API for marketing tools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from services.segmenter.adapters import repository
from services.segmenter.adapters.tables import outbox
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.settings import SegmenterSettings
from shared.consumer import ConsumerPipeline, DlqLimit
from shared.db import build_engine, database_reachable
from shared.events import decode_event
from shared.funnel import Health, LoyaltyStage
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
from shared.stores import StoreRegistry
from shared.web import (
    COMMON_ERROR_RESPONSES,
    ApiError,
    StoreDep,
    install_error_handlers,
    install_metrics_middleware,
    ops_router,
)
from shared.workers import WorkerGroup

log = get_logger(__name__)

OUTBOX_LOCK_KEY = 0x5E6_0001  # advisory lock id of the segmenter's outbox relay


class TransitionOut(BaseModel):
    from_stage: LoyaltyStage
    to_stage: LoyaltyStage
    reason: str
    occurred_at: datetime
    event_id: str


class CustomerProfile(BaseModel):
    store_id: str
    customer_id: str
    stage: LoyaltyStage
    health: Health
    email: str | None
    first_name: str | None
    last_name: str | None
    city: str | None
    country: str | None
    locale: str | None
    accepts_marketing: bool | None
    orders_count: int = Field(description="Orders placed (each order id counted once)")
    total_spent: Decimal = Field(description="Sum of order totals, in the order currency")
    currency: str | None
    first_order_at: datetime | None
    last_order_at: datetime | None
    transitions: list[TransitionOut]


class _Kafka:
    """The process's one producer (outbox relay and dead letters), connected in the background."""

    producer: AIOKafkaProducer | None = None


def create_app(settings: SegmenterSettings) -> FastAPI:
    kafka = _Kafka()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.stores = StoreRegistry.load(
            settings.stores_file, allow_placeholder_secrets=settings.environment != "production"
        )
        engine = build_engine(settings)
        app.state.engine = engine
        relay = OutboxRelay(
            name="segmenter",
            engine=engine,
            table=outbox,
            producer=lambda: kafka.producer,
            lock_key=OUTBOX_LOCK_KEY,
        )
        pipeline: ConsumerPipeline[object] = ConsumerPipeline(
            name="segmenter",
            consumer_factory=lambda: build_consumer(
                settings, settings.segmenter_group_id, [STOREFRONT_EVENTS], "segmenter"
            ),
            dlq_producer=lambda: kafka.producer,
            decode=decode_event,
            handle=FunnelProcessor(engine, on_outbox_written=relay.wake),  # type: ignore[arg-type]
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
    install_metrics_middleware(app)

    async def readiness() -> dict[str, bool]:
        producer = kafka.producer
        return {
            "postgres": await database_reachable(app.state.engine),
            "kafka": producer is not None and await kafka_reachable(producer),
            "consumer": app.state.pipeline.running,
        }

    app.include_router(ops_router(readiness))

    @app.get(
        "/v1/stores/{store_id}/customers/{customer_id}",
        tags=["customers"],
        response_model=CustomerProfile,
        responses=COMMON_ERROR_RESPONSES,
        summary="A customer's profile, funnel stage, health and transition history",
    )
    async def get_customer(store: StoreDep, customer_id: str, request: Request) -> CustomerProfile:
        async with request.app.state.engine.connect() as conn:
            profile = await repository.get_profile(conn, store.store_id, customer_id)
            if profile is None:
                raise ApiError(
                    404, "customer_not_found", f"no customer {customer_id!r} in store {store.store_id!r}"
                )
            history = await repository.get_transitions(conn, store.store_id, customer_id)
        return CustomerProfile(
            store_id=profile.store_id,
            customer_id=profile.customer_id,
            stage=profile.stage,
            health=profile.health,
            email=profile.email,
            first_name=profile.first_name,
            last_name=profile.last_name,
            city=profile.city,
            country=profile.country,
            locale=profile.locale,
            accepts_marketing=profile.accepts_marketing,
            orders_count=profile.orders_count,
            total_spent=profile.total_spent,
            currency=profile.currency,
            first_order_at=profile.first_order_at,
            last_order_at=profile.last_order_at,
            transitions=[TransitionOut(**t.__dict__) for t in history],
        )

    return app

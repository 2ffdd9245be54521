"""The notifier process: funnel-event consumer, message sender, and the API for marketing tools."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from pydantic import BaseModel

from services.notifier.adapters import repository
from services.notifier.adapters.smtp import SmtpSender
from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.entrypoints.processor import MessagePlanner
from services.notifier.entrypoints.sender import MessageSender
from services.notifier.settings import NotifierSettings
from shared.consumer import ConsumerPipeline
from shared.db import build_engine, database_reachable
from shared.funnel_events import decode_funnel_event
from shared.kafka import (
    FUNNEL_EVENTS,
    build_consumer,
    build_producer,
    dlq_topic,
    ensure_topics,
    kafka_reachable,
    start_forever,
)
from shared.logging import get_logger
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

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Notification(BaseModel):
    id: int
    flow: str
    channel: str
    status: str
    skip_reason: str | None
    subject: str | None
    trigger_event_id: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None


class _Kafka:
    producer: AIOKafkaProducer | None = None


def create_app(settings: NotifierSettings, *, clock: Clock = _utcnow) -> FastAPI:
    kafka = _Kafka()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stores = StoreRegistry.load(
            settings.stores_file, allow_placeholder_secrets=settings.environment != "production"
        )
        app.state.stores = stores
        engine = build_engine(settings)
        app.state.engine = engine
        sender = MessageSender(
            engine=engine,
            stores=stores,
            renderer=TemplateRenderer(),
            smtp=SmtpSender(settings),
            clock=clock,
            batch_size=settings.notifier_send_batch,
            max_attempts=settings.notifier_max_attempts,
        )
        pipeline: ConsumerPipeline[object] = ConsumerPipeline(
            name="notifier",
            consumer_factory=lambda: build_consumer(
                settings, settings.notifier_group_id, [FUNNEL_EVENTS], "notifier"
            ),
            dlq_producer=lambda: kafka.producer,
            decode=decode_funnel_event,
            handle=MessagePlanner(engine, clock, on_messages_due=sender.wake),  # type: ignore[arg-type]
        )
        app.state.pipeline = pipeline
        workers = WorkerGroup()
        app.state.workers = workers

        async def connect() -> None:
            producer = await start_forever(lambda: build_producer(settings, "notifier"), "producer", log)
            await ensure_topics(settings, [FUNNEL_EVENTS, dlq_topic(FUNNEL_EVENTS)])
            kafka.producer = producer
            workers.start("consumer", pipeline.run_forever())

        workers.start("kafka-connect", connect())
        workers.start("sender", sender.run_forever())
        try:
            yield
        finally:
            await workers.stop()
            if kafka.producer is not None:
                await kafka.producer.stop()
            await engine.dispose()

    app = FastAPI(
        title="Loyalty Funnel notifier",
        version="1",
        description="Turns funnel changes into personalised emails, coupons and audiences.",
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
        "/v1/stores/{store_id}/customers/{customer_id}/notifications",
        tags=["customers"],
        response_model=list[Notification],
        responses=COMMON_ERROR_RESPONSES,
        summary="Every message planned for a customer: sent, pending, skipped (with the reason) or failed",
    )
    async def customer_notifications(
        store: StoreDep, customer_id: str, request: Request
    ) -> list[Notification]:
        async with request.app.state.engine.connect() as conn:
            if not await repository.customer_known(conn, store.store_id, customer_id):
                raise ApiError(
                    404, "customer_not_found", f"no customer {customer_id!r} in store {store.store_id!r}"
                )
            rows = await repository.list_messages(conn, store.store_id, customer_id)
        return [
            Notification(
                id=r.id,
                flow=r.flow,
                channel=r.channel,
                status=r.status,
                skip_reason=r.skip_reason,
                subject=r.subject,
                trigger_event_id=r.trigger_event_id,
                attempts=r.attempts,
                created_at=r.created_at,
                sent_at=r.sent_at,
            )
            for r in rows
        ]

    return app

"""The notifier process: funnel-event consumer, message sender, and the API for marketing tools."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.adapters.recommendations import Recommender
from services.notifier.adapters.smtp import SmtpSender
from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.entrypoints import platform_routes, routes, unsubscribe
from services.notifier.entrypoints.audience_routes import audience_router
from services.notifier.entrypoints.audience_worker import AudienceWorker
from services.notifier.entrypoints.consent_sync import ConsentSync
from services.notifier.entrypoints.coupon_provisioning import CouponProvisioning
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
    install_client_rate_limit,
    install_error_handlers,
    install_input_guard,
    install_metrics_middleware,
    ops_router,
)
from shared.workers import WorkerGroup

log = get_logger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        app.state.clock = clock
        app.state.refresh_audiences = refresh_memberships
        smtp = SmtpSender(settings)
        platforms = PlatformClients(http, stores)
        sender = MessageSender(
            engine=engine,
            stores=stores,
            renderer=TemplateRenderer(),
            smtp=smtp,
            webhooks=WebhookSender(http),
            recommender=Recommender(
                engine, http, settings.segmenter_url, service_api_key=settings.effective_service_api_key()
            ),
            public_url=settings.notifier_public_url,
            clock=clock,
            batch_size=settings.notifier_send_batch,
            max_attempts=settings.notifier_max_attempts,
            coupon_provisioning=CouponProvisioning(engine, platforms, clock),
        )
        pipeline: ConsumerPipeline[object] = ConsumerPipeline(
            name="notifier",
            consumer_factory=lambda: build_consumer(
                settings, settings.notifier_group_id, [FUNNEL_EVENTS], "notifier"
            ),
            dlq_producer=lambda: kafka.producer,
            decode=decode_funnel_event,
            handle=MessagePlanner(  # type: ignore[arg-type]
                engine, stores, clock, on_messages_due=sender.wake
            ),
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
        workers.start(
            "consent-sync",
            ConsentSync(engine=engine, stores=stores, platforms=platforms, clock=clock).run_forever(),
        )
        workers.start("audiences", AudienceWorker(engine=engine, stores=stores, clock=clock).run_forever())
        try:
            yield
        finally:
            await workers.stop()
            await smtp.close()
            await http.aclose()
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
    install_input_guard(app)
    install_client_rate_limit(app, "notifier", settings)
    install_metrics_middleware(app)

    async def readiness() -> dict[str, bool]:
        producer = kafka.producer
        return {
            "postgres": await database_reachable(app.state.engine),
            "kafka": producer is not None and await kafka_reachable(producer),
            "consumer": app.state.pipeline.running,
        }

    app.include_router(ops_router(readiness))
    app.include_router(audience_router())

    app.include_router(routes.router)
    app.include_router(platform_routes.router)
    app.include_router(unsubscribe.router)

    return app

"""ingest: storefront webhooks and the Segment API in, canonical events onto Kafka."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.telemetry import TelemetryConfig

from services.ingest.context import IngestContext
from services.ingest.cors import SegmentCors
from services.ingest.producer import EventPublisher, Publisher
from services.ingest.ratelimit import RateLimiter
from services.ingest.routes import erasure, segment, segment_settings, webhooks
from services.ingest.settings import IngestSettings
from shared.clock import Clock, utcnow
from shared.kafka import build_producer
from shared.loop_lag import watch_loop_lag
from shared.stores import StoreRegistry
from shared.web import (
    ErrorBody,
    document_models,
    error_response,
    install_client_rate_limit,
    install_error_handlers,
    install_input_guard,
    install_metrics_middleware,
    ops_router,
    serve_directly,
)
from shared.workers import WorkerGroup


def _native_telemetry() -> TelemetryConfig | None:
    """FastAPI's own OpenTelemetry support asks the global OpenTelemetry providers, on every request, whether
    one is configured: 11 us a webhook here, for nothing, since no provider is set up in ingest. Kept when
    an operator asks FastAPI to export from the environment (FASTAPI_OTEL_AUTO_CONFIGURE=true)."""
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return None
    return {"tracing": False, "metrics": False, "logs": False}


async def _too_deeply_nested(_: Request, exc: Exception) -> Response:
    # A body nested nearly as deep as Python's recursion limit: its parser read it, and a later step could
    # not (the size of a call measured as JSON, a call's name, an event written for Kafka). Each of those runs
    # before anything is published, so the sender is told, and nothing was half accepted.
    body = ErrorBody(
        error="too_deeply_nested", detail="the body nests arrays and objects deeper than ingest reads"
    )
    return error_response(400, body)


def create_app(
    settings: IngestSettings, *, clock: Clock = utcnow, publisher: Publisher | None = None
) -> FastAPI:
    """The ingest app; `publisher` is for unit tests (the real one talks to Kafka)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stores = StoreRegistry.load(
            settings.stores_file, allow_placeholder_secrets=settings.environment != "production"
        )
        active = publisher or EventPublisher(
            settings, lambda: build_producer(settings, "ingest"), settings.ingest_publish_timeout_seconds
        )
        limiter = RateLimiter(settings.ingest_rate_limit_per_second, settings.ingest_rate_limit_burst)
        browser_key_limiter = RateLimiter(
            settings.ingest_browser_key_rate_limit_per_second, settings.ingest_browser_key_rate_limit_burst
        )
        browser_client_limiter = RateLimiter(
            settings.ingest_browser_client_rate_limit_per_second,
            settings.ingest_browser_client_rate_limit_burst,
        )
        app.state.stores = stores  # the store's REST API key (shared.web.require_store): erasure requests
        app.state.ingest = IngestContext(
            settings, stores, active, limiter, clock, browser_key_limiter, browser_client_limiter
        )
        workers = WorkerGroup()
        app.state.workers = workers
        workers.start("kafka-connect", active.connect_forever())
        workers.start("loop-lag", watch_loop_lag())
        try:
            yield
        finally:
            await workers.stop()
            await active.close()

    app = FastAPI(
        title="Loyalty Funnel ingest",
        version="1",
        description=(
            "Receives storefront events (Shopify and WooCommerce webhooks, Segment's HTTP Tracking API) and "
            "puts them on Kafka. A 2xx means Kafka acknowledged the event; on 429 and 503 retry after "
            "Retry-After."
        ),
        lifespan=lifespan,
        telemetry=_native_telemetry(),
    )
    install_error_handlers(app)
    app.add_exception_handler(RecursionError, _too_deeply_nested)
    install_input_guard(app)
    install_client_rate_limit(app, "ingest", settings)
    install_metrics_middleware(app)
    # Outermost, so the CORS headers reach every answer of the Segment API, errors included.
    app.add_middleware(SegmentCors, stores=lambda: app.state.ingest.stores)

    async def readiness() -> dict[str, bool]:
        ctx: IngestContext = app.state.ingest
        return {"kafka": await ctx.publisher.reachable()}

    app.include_router(ops_router(readiness))
    app.include_router(webhooks.router)
    app.include_router(segment.router)
    app.include_router(segment_settings.router)
    app.include_router(erasure.router)
    document_models(app, list(segment.REQUEST_MODELS.values()))
    serve_directly(app, [*webhooks.DIRECT_ROUTES, *segment.DIRECT_ROUTES])
    return app

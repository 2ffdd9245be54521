"""ingest's HTTP surface: storefront webhooks in, canonical events onto Kafka."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.ingest.body import read_limited_body
from services.ingest.producer import EventPublisher, Publisher, PublishUnavailable
from services.ingest.settings import IngestSettings
from services.ingest.sources import shopify
from shared.events import StorefrontEvent
from shared.kafka import build_producer
from shared.logging import get_logger
from shared.stores import StoreRegistry
from shared.web import (
    ApiError,
    ErrorBody,
    install_error_handlers,
    install_metrics_middleware,
    ops_router,
    validation_errors,
)
from shared.workers import WorkerGroup

log = get_logger(__name__)

WEBHOOKS = Counter(
    "ingest_webhooks_total", "Webhooks received, by source, topic and outcome", ["source", "topic", "outcome"]
)

RETRY_AFTER_SECONDS = "5"
Clock = Callable[[], datetime]


class Accepted(BaseModel):
    status: str
    event_id: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: IngestSettings, *, clock: Clock = _utcnow, publisher: Publisher | None = None
) -> FastAPI:
    """The ingest app; `publisher` is for unit tests (the real one talks to Kafka)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.stores = StoreRegistry.load(
            settings.stores_file, allow_placeholder_secrets=settings.environment != "production"
        )
        publisher = injected or EventPublisher(
            settings, lambda: build_producer(settings, "ingest"), settings.ingest_publish_timeout_seconds
        )
        app.state.publisher = publisher
        workers = WorkerGroup()
        app.state.workers = workers
        workers.start("kafka-connect", publisher.connect_forever())
        try:
            yield
        finally:
            await workers.stop()
            await publisher.close()

    injected = publisher
    app = FastAPI(
        title="Loyalty Funnel ingest",
        version="1",
        description="Receives storefront events (Shopify, WooCommerce, Segment) and puts them on Kafka.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_metrics_middleware(app)

    async def readiness() -> dict[str, bool]:
        return {"kafka": await app.state.publisher.reachable()}

    app.include_router(ops_router(readiness))

    @app.post(
        "/webhooks/shopify",
        tags=["webhooks"],
        summary="Receive a Shopify webhook",
        response_model=Accepted,
        responses={
            400: {"model": ErrorBody, "description": "body is not JSON"},
            401: {"model": ErrorBody, "description": "unknown shop or bad signature"},
            413: {"model": ErrorBody, "description": "body too large"},
            422: {"model": ErrorBody, "description": "payload does not fit the topic (the field is named)"},
            503: {"model": ErrorBody, "description": "Kafka did not acknowledge; retry after Retry-After"},
        },
    )
    async def shopify_webhook(
        request: Request,
        x_shopify_topic: Annotated[str, Header()],
        x_shopify_shop_domain: Annotated[str, Header()],
        x_shopify_hmac_sha256: Annotated[str | None, Header()] = None,
        x_shopify_event_id: Annotated[str | None, Header()] = None,
        x_shopify_webhook_id: Annotated[str | None, Header()] = None,
    ) -> Accepted:
        """Orders and customers from a Shopify shop; the shop is known by its domain and its signature.

        A topic we do not use is acknowledged (200, status `ignored`) so Shopify does not retry it.
        """
        body = await read_limited_body(request, settings.ingest_max_body_bytes)
        registry: StoreRegistry = request.app.state.stores
        store = registry.by_shop_domain(x_shopify_shop_domain)
        if store is None or store.shopify is None:
            raise ApiError(401, "unknown_shop", "no store is registered for this X-Shopify-Shop-Domain")
        if not shopify.signature_is_valid(
            store.shopify.webhook_secret.get_secret_value(), body, x_shopify_hmac_sha256
        ):
            WEBHOOKS.labels("shopify", x_shopify_topic, "bad_signature").inc()
            raise ApiError(401, "bad_signature", "X-Shopify-Hmac-Sha256 does not match the body")
        event_id = x_shopify_event_id or x_shopify_webhook_id
        if not event_id:
            raise ApiError(400, "missing_header", "X-Shopify-Event-Id (or X-Shopify-Webhook-Id) is required")
        payload = _parse_json(body)
        try:
            event = shopify.to_canonical(
                x_shopify_topic,
                payload,
                store_id=store.store_id,
                event_id=f"shopify:{event_id}",
                received_at=clock(),
            )
        except ValidationError as exc:
            WEBHOOKS.labels("shopify", x_shopify_topic, "invalid").inc()
            errors = validation_errors(exc.errors())
            raise ApiError(
                422,
                "invalid_payload",
                "; ".join(f"{e.field}: {e.message}" for e in errors[:5]),
                errors=errors,
            ) from exc
        topic_label = x_shopify_topic if x_shopify_topic in shopify.HANDLED_TOPICS else "other"
        if event is None:
            WEBHOOKS.labels("shopify", topic_label, "ignored").inc()
            return Accepted(status="ignored")
        await _publish(request, event)
        WEBHOOKS.labels("shopify", topic_label, "accepted").inc()
        log.info("event_accepted", store_id=store.store_id, event_id=event.event_id, type=event.type)
        return Accepted(status="accepted", event_id=event.event_id)

    return app


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc


async def _publish(request: Request, event: StorefrontEvent) -> None:
    publisher: Publisher = request.app.state.publisher
    try:
        await publisher.publish(event)
    except PublishUnavailable as exc:
        log.warning("publish_unavailable", event_id=event.event_id, error=str(exc))
        raise ApiError(
            503,
            "kafka_unavailable",
            "the event was not stored; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc

"""Storefront platforms' webhooks: Shopify and WooCommerce."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from fastapi import APIRouter, Request
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.ingest.accept import check_rate, publish, reject_future
from services.ingest.body import parse_json, read_limited_body
from services.ingest.context import context
from services.ingest.headers import HeaderSpec, openapi_parameters, read_headers
from services.ingest.sources import shopify, woocommerce
from services.ingest.sources.base import NOTHING_CHECKED, Checked
from shared.events import StorefrontEvent
from shared.logging import get_logger
from shared.web import ApiError, ErrorBody, validation_errors

log = get_logger(__name__)

WEBHOOKS = Counter(
    "ingest_webhooks_total", "Webhooks received, by source, topic and outcome", ["source", "topic", "outcome"]
)

router = APIRouter(tags=["webhooks"])


class Accepted(BaseModel):
    status: str
    event_id: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "body is not JSON, or a required header is missing"},
    401: {"model": ErrorBody, "description": "unknown shop or bad signature"},
    413: {"model": ErrorBody, "description": "body too large"},
    422: {"model": ErrorBody, "description": "payload does not fit the topic (the field is named)"},
    429: {"model": ErrorBody, "description": "the store is over its rate; retry after Retry-After"},
    503: {"model": ErrorBody, "description": "Kafka did not acknowledge; retry after Retry-After"},
}


def _invalid(source: str, topic: str, exc: ValidationError) -> ApiError:
    WEBHOOKS.labels(source, topic, "invalid").inc()
    errors = validation_errors(exc.errors())
    return ApiError(
        422, "invalid_payload", "; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors=errors
    )


async def _accept(
    request: Request, source: str, topic: str, store_id: str, event: StorefrontEvent | None
) -> Accepted:
    ctx = context(request)
    if event is None:
        WEBHOOKS.labels(source, topic, "ignored").inc()
        return Accepted(status="ignored")
    reject_future([event], event.received_at)
    check_rate(ctx.limiter, store_id, source, 1)
    await publish(ctx.publisher, [event], source)
    WEBHOOKS.labels(source, topic, "accepted").inc()
    # Debug, not info: a JSON line per accepted webhook was about 7 % of its time (bench/README.md), and
    # Segment calls were never logged one by one either; ingest_webhooks_total counts them.
    log.debug("event_accepted", store_id=store_id, event_id=event.event_id, type=event.type)
    return Accepted(status="accepted", event_id=event.event_id)


class WebhookMapper(Protocol):
    """A platform's mapper module (sources/shopify.py, sources/woocommerce.py)."""

    HANDLED_TOPICS: frozenset[str]

    def to_canonical(
        self,
        topic: str,
        payload: Any,
        *,
        store_id: str,
        event_id: str,
        received_at: datetime,
        checked: Checked = ...,
    ) -> StorefrontEvent | None: ...


class _WooCommerceForStore:
    """The WooCommerce mapper with the store's opt-in meta field (its marketing consent)."""

    HANDLED_TOPICS = woocommerce.HANDLED_TOPICS

    def __init__(self, consent: woocommerce.ConsentField | None) -> None:
        self._consent = consent

    def to_canonical(
        self,
        topic: str,
        payload: Any,
        *,
        store_id: str,
        event_id: str,
        received_at: datetime,
        checked: Checked = NOTHING_CHECKED,
    ) -> StorefrontEvent | None:
        return woocommerce.to_canonical(
            topic,
            payload,
            store_id=store_id,
            event_id=event_id,
            received_at=received_at,
            checked=checked,
            consent=self._consent,
        )


async def _translate(
    request: Request,
    source: str,
    mapper: WebhookMapper,
    topic: str,
    body: bytes,
    store_id: str,
    delivery: str,
) -> Accepted:
    """Once the sender is verified: parse, map to the canonical event, accept (or 422 naming the field)."""
    event_id = f"{source}:{delivery}"
    label = topic if topic in mapper.HANDLED_TOPICS else "other"
    payload = parse_json(body)
    try:
        event = mapper.to_canonical(
            topic,
            payload,
            store_id=store_id,
            event_id=event_id,
            received_at=context(request).clock(),
            checked=Checked.body(body),
        )
    except ValidationError as exc:
        raise _invalid(source, label, exc) from exc
    return await _accept(request, source, label, store_id, event)


SHOPIFY_HEADERS = (
    HeaderSpec("X-Shopify-Topic", required=True),
    HeaderSpec("X-Shopify-Shop-Domain", required=True),
    HeaderSpec("X-Shopify-Hmac-Sha256"),
    HeaderSpec("X-Shopify-Event-Id"),
    HeaderSpec("X-Shopify-Webhook-Id"),
)


@router.post(
    "/webhooks/shopify",
    summary="Receive a Shopify webhook",
    response_model=Accepted,
    responses=ERRORS,
    openapi_extra=openapi_parameters(SHOPIFY_HEADERS),
)
async def shopify_webhook(request: Request) -> Accepted:
    """Orders, refunds, checkouts, customers and the privacy topics of a Shopify shop, known by its domain
    and its signature. A topic we do not use is acknowledged (200, status `ignored`) so Shopify stops
    retrying it. The event id is X-Shopify-Event-Id (the same on every retry), else X-Shopify-Webhook-Id."""
    headers = read_headers(request, SHOPIFY_HEADERS)
    x_shopify_topic = headers["x-shopify-topic"] or ""
    x_shopify_shop_domain = headers["x-shopify-shop-domain"] or ""
    x_shopify_hmac_sha256 = headers["x-shopify-hmac-sha256"]
    x_shopify_event_id = headers["x-shopify-event-id"]
    x_shopify_webhook_id = headers["x-shopify-webhook-id"]
    ctx = context(request)
    body = await read_limited_body(request, ctx.settings.ingest_max_body_bytes)
    store = ctx.stores.by_shop_domain(x_shopify_shop_domain)
    if store is None or store.shopify is None:
        raise ApiError(401, "unknown_shop", "no store is registered for this X-Shopify-Shop-Domain")
    if not shopify.signature_is_valid(
        store.shopify.webhook_secret.get_secret_value(), body, x_shopify_hmac_sha256
    ):
        WEBHOOKS.labels("shopify", "any", "bad_signature").inc()
        raise ApiError(401, "bad_signature", "X-Shopify-Hmac-Sha256 does not match the body")
    delivery = x_shopify_event_id or x_shopify_webhook_id
    if not delivery:
        raise ApiError(400, "missing_header", "X-Shopify-Event-Id (or X-Shopify-Webhook-Id) is required")
    if x_shopify_topic in shopify.PRIVACY_TOPICS and not shopify.body_shop_matches(
        x_shopify_topic, parse_json(body), store.shopify.shop_domain
    ):
        WEBHOOKS.labels("shopify", x_shopify_topic, "shop_mismatch").inc()
        raise ApiError(
            401, "shop_mismatch", "the signed body's shop_domain is not the X-Shopify-Shop-Domain's shop"
        )
    return await _translate(request, "shopify", shopify, x_shopify_topic, body, store.store_id, delivery)


# All optional here: a ping carries none of them, and a missing one is a 400 naming it, below.
WOOCOMMERCE_HEADERS = (
    HeaderSpec("Content-Type"),
    HeaderSpec("X-WC-Webhook-Source"),
    HeaderSpec("X-WC-Webhook-Topic"),
    HeaderSpec("X-WC-Webhook-Signature"),
    HeaderSpec("X-WC-Webhook-Delivery-ID"),
)


@router.post(
    "/webhooks/woocommerce",
    summary="Receive a WooCommerce webhook",
    response_model=Accepted,
    responses=ERRORS,
    openapi_extra=openapi_parameters(WOOCOMMERCE_HEADERS),
)
async def woocommerce_webhook(request: Request) -> Accepted:
    """Orders and customers of a WooCommerce site, known by X-WC-Webhook-Source and its signature (base64
    HMAC-SHA256 of the raw body). The ping WooCommerce sends when a webhook is saved (a form-encoded
    `webhook_id=<n>`, unsigned) is answered 200 so the webhook can be activated; it produces nothing."""
    headers = read_headers(request, WOOCOMMERCE_HEADERS)
    content_type = headers["content-type"]
    x_wc_webhook_source = headers["x-wc-webhook-source"]
    x_wc_webhook_topic = headers["x-wc-webhook-topic"]
    x_wc_webhook_signature = headers["x-wc-webhook-signature"]
    x_wc_webhook_delivery_id = headers["x-wc-webhook-delivery-id"]
    ctx = context(request)
    body = await read_limited_body(request, ctx.settings.ingest_max_body_bytes)
    if woocommerce.is_ping(content_type, body):
        WEBHOOKS.labels("woocommerce", "ping", "accepted").inc()
        return Accepted(status="pong")
    if not x_wc_webhook_source or not x_wc_webhook_topic:
        raise ApiError(400, "missing_header", "X-WC-Webhook-Source and X-WC-Webhook-Topic are required")
    store = ctx.stores.by_woocommerce_site(x_wc_webhook_source)
    if store is None or store.woocommerce is None:
        raise ApiError(401, "unknown_site", "no store is registered for this X-WC-Webhook-Source")
    if not woocommerce.signature_is_valid(
        store.woocommerce.webhook_secret.get_secret_value(), body, x_wc_webhook_signature
    ):
        WEBHOOKS.labels("woocommerce", "any", "bad_signature").inc()
        raise ApiError(401, "bad_signature", "X-WC-Webhook-Signature does not match the body")
    if not x_wc_webhook_delivery_id:
        raise ApiError(400, "missing_header", "X-WC-Webhook-Delivery-ID is required")
    delivery = x_wc_webhook_delivery_id
    mapper = _WooCommerceForStore(
        woocommerce.ConsentField(store.woocommerce.consent_meta_key, store.woocommerce.consent_yes_values)
        if store.woocommerce.consent_meta_key
        else None
    )
    return await _translate(
        request, "woocommerce", mapper, x_wc_webhook_topic, body, store.store_id, delivery
    )

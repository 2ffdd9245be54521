"""Storefront platforms' webhooks: Shopify and WooCommerce.

Each route is declared for OpenAPI (its headers, answers and errors) and answered by a direct handler
(`DIRECT_ROUTES`, see shared.web.serve_directly): it reads the headers and the raw body itself, verifies the
signature on the bytes, and answers with JSON rendered here, exactly as FastAPI rendered the `Accepted`
model (the same bytes and headers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.ingest.accept import check_rate, publish, reject_implausible_times
from services.ingest.body import parse_json, read_limited_body
from services.ingest.context import IngestContext, context
from services.ingest.headers import HeaderSet, HeaderSpec
from services.ingest.sources import shopify, woocommerce
from services.ingest.sources.base import NOTHING_CHECKED, Checked
from shared.events import StorefrontEvent
from shared.logging import get_logger
from shared.metrics import LabelledChildren
from shared.web import ApiError, DirectHandler, ErrorBody, validation_errors

log = get_logger(__name__)

WEBHOOKS = Counter(
    "ingest_webhooks_total", "Webhooks received, by source, topic and outcome", ["source", "topic", "outcome"]
)

_OUTCOMES = LabelledChildren(WEBHOOKS)

router = APIRouter(tags=["webhooks"])


# The answer to a webhook, documented by this model and rendered by `_answer` (no docstring: it would
# become the schema's description in OpenAPI).
class Accepted(BaseModel):
    status: str
    event_id: str | None = None


def _answer(status: str, event_id: str | None = None) -> Response:
    """The bytes FastAPI's JSONResponse made of `Accepted(status=..., event_id=...)` (json.dumps with
    ensure_ascii=False, no spaces). msgspec writes a string as json.dumps does then (checked for every
    character a header value can hold, Latin-1) at a twentieth of the cost."""
    rendered = msgspec.json.encode(event_id) if event_id is not None else b"null"
    return Response(b'{"status":"' + status.encode() + b'","event_id":' + rendered + b"}", media_type=_JSON)


_JSON = "application/json"


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "body is not JSON, or a required header is missing"},
    401: {"model": ErrorBody, "description": "unknown shop or bad signature"},
    413: {"model": ErrorBody, "description": "body too large"},
    422: {"model": ErrorBody, "description": "payload does not fit the topic (the field is named)"},
    429: {"model": ErrorBody, "description": "the store is over its rate; retry after Retry-After"},
    503: {"model": ErrorBody, "description": "Kafka did not acknowledge; retry after Retry-After"},
}


def _invalid(source: str, topic: str, exc: ValidationError) -> ApiError:
    _OUTCOMES.child(source, topic, "invalid").inc()
    errors = validation_errors(exc.errors())
    return ApiError(
        422, "invalid_payload", "; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors=errors
    )


async def _accept(
    ctx: IngestContext, source: str, topic: str, store_id: str, event: StorefrontEvent | None
) -> Response:
    if event is None:
        _OUTCOMES.child(source, topic, "ignored").inc()
        return _answer("ignored")
    reject_implausible_times([event], event.received_at)
    check_rate(ctx.limiter, store_id, source, 1)
    await publish(ctx.publisher, [event], source)
    _OUTCOMES.child(source, topic, "accepted").inc()
    # Debug, not info: a JSON line per accepted webhook was about 7 % of its time (bench/README.md), and
    # Segment calls were never logged one by one either; ingest_webhooks_total counts them.
    log.debug("event_accepted", store_id=store_id, event_id=event.event_id, type=event.type)
    return _answer("accepted", event.event_id)


class WebhookMapper(Protocol):
    """A platform's mapper module (sources/shopify.py, sources/woocommerce.py)."""

    HANDLED_TOPICS: frozenset[str]

    def body_to_canonical(
        self,
        topic: str,
        body: bytes,
        parse: Callable[[bytes], Any],
        *,
        store_id: str,
        event_id: str,
        received_at: datetime,
        checked: Checked = ...,
    ) -> StorefrontEvent | None:
        """The event of the raw body; `parse` is the route's JSON parser (its errors are the 400)."""
        ...


class _WooCommerceForStore:
    """The WooCommerce mapper with the store's opt-in meta field (its marketing consent)."""

    HANDLED_TOPICS = woocommerce.HANDLED_TOPICS

    def __init__(self, consent: woocommerce.ConsentField | None) -> None:
        self._consent = consent

    def body_to_canonical(
        self,
        topic: str,
        body: bytes,
        parse: Callable[[bytes], Any],
        *,
        store_id: str,
        event_id: str,
        received_at: datetime,
        checked: Checked = NOTHING_CHECKED,
    ) -> StorefrontEvent | None:
        return woocommerce.to_canonical(
            topic,
            parse(body),
            store_id=store_id,
            event_id=event_id,
            received_at=received_at,
            checked=checked,
            consent=self._consent,
        )


async def _translate(
    ctx: IngestContext,
    source: str,
    mapper: WebhookMapper,
    topic: str,
    body: bytes,
    store_id: str,
    delivery: str,
) -> Response:
    """Once the sender is verified: parse, map to the canonical event, accept (or 422 naming the field)."""
    event_id = f"{source}:{delivery}"
    label = topic if topic in mapper.HANDLED_TOPICS else "other"
    try:
        event = mapper.body_to_canonical(
            topic,
            body,
            parse_json,
            store_id=store_id,
            event_id=event_id,
            received_at=ctx.clock(),
            checked=Checked.body(body),
        )
    except ValidationError as exc:
        raise _invalid(source, label, exc) from exc
    return await _accept(ctx, source, label, store_id, event)


SHOPIFY_HEADERS = HeaderSet(
    (
        HeaderSpec("X-Shopify-Topic", required=True),
        HeaderSpec("X-Shopify-Shop-Domain", required=True),
        HeaderSpec("X-Shopify-Hmac-Sha256"),
        HeaderSpec("X-Shopify-Event-Id"),
        HeaderSpec("X-Shopify-Webhook-Id"),
    )
)


@router.post(
    "/webhooks/shopify",
    summary="Receive a Shopify webhook",
    response_model=Accepted,
    responses=ERRORS,
    openapi_extra=SHOPIFY_HEADERS.openapi_parameters(),
)
async def shopify_webhook(request: Request) -> Response:
    """Orders (created, updated, cancelled, deleted), refunds, checkouts, customers and the privacy topics
    of a Shopify shop, known by its domain and its signature. A topic we do not use is acknowledged (200,
    status `ignored`) so Shopify stops retrying it. The event id is X-Shopify-Event-Id (the same on every
    retry), else X-Shopify-Webhook-Id."""
    return await receive_shopify(request)


async def receive_shopify(request: Request) -> Response:
    headers = SHOPIFY_HEADERS.read(request.scope)
    topic = headers["x-shopify-topic"]
    ctx = context(request)
    body = await read_limited_body(request, ctx.settings.ingest_max_body_bytes)
    store = ctx.stores.by_shop_domain(headers["x-shopify-shop-domain"])
    if store is None or store.shopify is None:
        raise ApiError(401, "unknown_shop", "no store is registered for this X-Shopify-Shop-Domain")
    if not shopify.signature_is_valid(
        store.shopify.webhook_secret.get_secret_value(), body, headers.get("x-shopify-hmac-sha256")
    ):
        _OUTCOMES.child("shopify", "any", "bad_signature").inc()
        raise ApiError(401, "bad_signature", "X-Shopify-Hmac-Sha256 does not match the body")
    delivery = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id")
    if not delivery:
        raise ApiError(400, "missing_header", "X-Shopify-Event-Id (or X-Shopify-Webhook-Id) is required")
    if topic in shopify.PRIVACY_TOPICS and not shopify.body_shop_matches(
        topic, parse_json(body), store.shopify.shop_domain
    ):
        _OUTCOMES.child("shopify", topic, "shop_mismatch").inc()
        raise ApiError(
            401, "shop_mismatch", "the signed body's shop_domain is not the X-Shopify-Shop-Domain's shop"
        )
    return await _translate(ctx, "shopify", shopify, topic, body, store.store_id, delivery)


# All optional here: a ping carries none of them, and a missing one is a 400 naming it, below.
WOOCOMMERCE_HEADERS = HeaderSet(
    (
        HeaderSpec("Content-Type"),
        HeaderSpec("X-WC-Webhook-Source"),
        HeaderSpec("X-WC-Webhook-Topic"),
        HeaderSpec("X-WC-Webhook-Signature"),
        HeaderSpec("X-WC-Webhook-Delivery-ID"),
    )
)


@router.post(
    "/webhooks/woocommerce",
    summary="Receive a WooCommerce webhook",
    response_model=Accepted,
    responses=ERRORS,
    openapi_extra=WOOCOMMERCE_HEADERS.openapi_parameters(),
)
async def woocommerce_webhook(request: Request) -> Response:
    """Orders (created, updated, moved to the trash) and customers of a WooCommerce site, known by
    X-WC-Webhook-Source and its signature (base64 HMAC-SHA256 of the raw body). The ping WooCommerce sends
    when a webhook is saved (a form-encoded `webhook_id=<n>`, unsigned) is answered 200 so the webhook can
    be activated; it produces nothing."""
    return await receive_woocommerce(request)


async def receive_woocommerce(request: Request) -> Response:
    headers = WOOCOMMERCE_HEADERS.read(request.scope)
    ctx = context(request)
    body = await read_limited_body(request, ctx.settings.ingest_max_body_bytes)
    if woocommerce.is_ping(headers.get("content-type"), body):
        _OUTCOMES.child("woocommerce", "ping", "accepted").inc()
        return _answer("pong")
    source = headers.get("x-wc-webhook-source")
    topic = headers.get("x-wc-webhook-topic")
    if not source or not topic:
        raise ApiError(400, "missing_header", "X-WC-Webhook-Source and X-WC-Webhook-Topic are required")
    store = ctx.stores.by_woocommerce_site(source)
    if store is None or store.woocommerce is None:
        raise ApiError(401, "unknown_site", "no store is registered for this X-WC-Webhook-Source")
    if not woocommerce.signature_is_valid(
        store.woocommerce.webhook_secret.get_secret_value(), body, headers.get("x-wc-webhook-signature")
    ):
        _OUTCOMES.child("woocommerce", "any", "bad_signature").inc()
        raise ApiError(401, "bad_signature", "X-WC-Webhook-Signature does not match the body")
    delivery = headers.get("x-wc-webhook-delivery-id")
    if not delivery:
        raise ApiError(400, "missing_header", "X-WC-Webhook-Delivery-ID is required")
    mapper = _WooCommerceForStore(
        woocommerce.ConsentField(store.woocommerce.consent_meta_key, store.woocommerce.consent_yes_values)
        if store.woocommerce.consent_meta_key
        else None
    )
    return await _translate(ctx, "woocommerce", mapper, topic, body, store.store_id, delivery)


def _declared(path: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path)


# Served by their direct handlers (api.py): the declared routes above document them.
DIRECT_ROUTES: tuple[tuple[APIRoute, DirectHandler], ...] = (
    (_declared("/webhooks/shopify"), receive_shopify),
    (_declared("/webhooks/woocommerce"), receive_woocommerce),
)

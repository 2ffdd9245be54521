"""The ingest HTTP contract with a fake publisher standing in for Kafka (the real one is in tests/e2e)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from services.ingest.api import create_app
from services.ingest.producer import PublishUnavailable
from services.ingest.settings import IngestSettings
from services.ingest.sources import shopify
from shared.events import OrderPlacedEvent, PublishableEvent, StorefrontEvent, decode_event, encode_event
from shared.settings import REPO_ROOT
from tests.examples import source_example

SECRET = "demo-shopify-secret"


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[StorefrontEvent] = []
        self.available = True

    async def connect_forever(self) -> None:
        return None

    async def publish_many(self, events: Sequence[PublishableEvent]) -> None:
        if not self.available:
            raise PublishUnavailable("down")
        # As the segmenter will read them: events written straight to bytes are decoded.
        self.published.extend(decode_event(encode_event(e)) for e in events)

    async def reachable(self) -> bool:
        return self.available

    async def close(self) -> None:
        return None


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngestSettings(
        stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml", ingest_max_body_bytes=64 * 1024
    )
    app = create_app(settings, publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            yield http


def _headers(
    body: bytes, *, topic: str = "orders/create", secret: str = SECRET, event_id: str = "ev-1"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign(secret, body),
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Webhook-Id": "wh-1",
    }


async def test_signed_order_is_published(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    body = json.dumps(source_example("shopify", "orders.create__order_with_customer")).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "event_id": "shopify:ev-1"}
    [event] = publisher.published
    assert event.type == "order_placed"
    assert event.store_id == "demo"


async def test_bad_signature_is_401_and_publishes_nothing(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = json.dumps(source_example("shopify", "orders.create__order_with_customer")).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body, secret="wrong"))
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert publisher.published == []


async def test_unknown_shop_is_401(client: httpx.AsyncClient) -> None:
    body = b"{}"
    headers = {**_headers(body), "X-Shopify-Shop-Domain": "someone-else.myshopify.com"}
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unknown_shop"


async def test_invalid_payload_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["currency"] = "dollars"
    body = json.dumps(payload).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["currency"]


@pytest.mark.parametrize(
    ("name", "value", "fields"),
    [
        # Without its own consent_updated_at, the consent is dated by updated_at too (Shopify's reader).
        ("updated_at", "9999-12-31T00:00:00Z", ["customer.updated_at", "customer.consent_at"]),
        ("updated_at", "0001-01-01T00:00:00Z", ["customer.updated_at", "customer.consent_at"]),
        ("consent_updated_at", "1969-07-20T20:17:00Z", ["customer.consent_at"]),
    ],
)
async def test_a_customer_time_out_of_range_is_422_naming_it(
    client: httpx.AsyncClient, publisher: FakePublisher, name: str, value: str, fields: list[str]
) -> None:
    """An order of today whose customer's details are dated in year 9999 (or before 1970): the segmenter
    would date a birthday reminder after year 9999 from it."""
    payload = source_example("shopify", "orders.create__order_with_customer")
    customer = payload["customer"]
    if name == "consent_updated_at":
        customer["email_marketing_consent"]["consent_updated_at"] = value
    else:
        customer[name] = value
    body = json.dumps(payload).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "time_out_of_range"
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert publisher.published == []


@pytest.mark.parametrize("value", ["9999-12-31T00:00:00Z", "1969-12-31T23:59:59Z"])
async def test_an_order_version_out_of_range_is_422_naming_it(
    client: httpx.AsyncClient, publisher: FakePublisher, value: str
) -> None:
    """An order's `updated_at` decides which of its versions the segmenter holds: one dated in year 9999
    would hold its content against every later edit."""
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["updated_at"] = value
    body = json.dumps(payload).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "time_out_of_range"
    assert [e["field"] for e in response.json()["errors"]] == ["order.updated_at"]
    assert publisher.published == []


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    body = b'{"id": '
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


async def test_missing_topic_header_is_422_naming_it(client: httpx.AsyncClient) -> None:
    body = b"{}"
    headers = _headers(body)
    del headers["X-Shopify-Topic"]
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "x-shopify-topic"


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    body = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 413
    assert publisher.published == []


async def test_unused_topic_is_acknowledged_not_published(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = b'{"id": 1}'
    response = await client.post(
        "/webhooks/shopify", content=body, headers=_headers(body, topic="products/update")
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert publisher.published == []


async def test_kafka_down_is_503_with_retry_after(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    publisher.available = False
    body = json.dumps(source_example("shopify", "orders.create__order_with_customer")).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["kafka"] is False


async def test_ops_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert "http_requests_total" in metrics
    # Whether its Segment mapping runs compiled (shared/compiled.py), 1 or 0.
    assert 'compiled_modules_in_use{package="services.ingest.sources"}' in metrics
    spec = (await client.get("/openapi.json")).json()
    assert "/webhooks/shopify" in spec["paths"]


async def test_a_nul_in_a_webhook_field_is_removed(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # PostgreSQL text cannot hold it, and a refused webhook is only resent (sources/fitting.py).
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["line_items"][0]["title"] = "Tea\x00"
    payload["customer"]["first_name"] = "A\x00nn"
    body = json.dumps(payload).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 200, response.text
    [event] = publisher.published
    assert isinstance(event, OrderPlacedEvent)
    assert (event.payload.line_items[0].title, event.customer.first_name) == ("Tea", "Ann")


async def test_text_that_only_looks_like_a_nul_escape_is_kept(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["line_items"][0]["title"] = "Tea \\u0000"
    body = json.dumps(payload).encode()
    response = await client.post("/webhooks/shopify", content=body, headers=_headers(body))
    assert response.status_code == 200, response.text
    [event] = publisher.published
    assert event.type == "order_placed"
    assert event.payload.line_items[0].title == "Tea \\u0000"

"""ingest with no broker behind it: it starts, says it is not ready, and answers 503 fast, never 2xx."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from deploy.devstack.ports import free_ports
from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from services.ingest.sources import shopify
from shared.settings import REPO_ROOT
from tests.examples import source_example

pytestmark = pytest.mark.integration


@pytest.fixture
async def ingest_without_kafka() -> AsyncIterator[httpx.AsyncClient]:
    [nobody_listens] = free_ports(1)
    settings = IngestSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{nobody_listens}",
        stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


async def test_kafka_down_means_503_with_retry_after_well_inside_shopifys_timeout(
    ingest_without_kafka: httpx.AsyncClient,
) -> None:
    body = json.dumps(source_example("shopify", "orders.create__order_with_customer")).encode()
    headers = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": "kafka-down-1",
    }
    started = time.monotonic()
    response = await ingest_without_kafka.post("/webhooks/shopify", content=body, headers=headers)
    assert time.monotonic() - started < 5.0
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    ready = await ingest_without_kafka.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["kafka"] is False
    assert (await ingest_without_kafka.get("/healthz")).status_code == 200

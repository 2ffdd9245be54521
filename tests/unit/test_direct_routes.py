"""Routes served directly (shared.web.serve_directly): the webhooks answer exactly as their declared FastAPI
endpoints did, byte for byte, with the same OpenAPI, metrics and 405s."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY, Counter

from services.ingest.api import create_app
from services.ingest.routes import segment, webhooks
from services.ingest.settings import IngestSettings
from shared.events import PublishableEvent, StorefrontEvent, decode_event, encode_event
from shared.metrics import LabelledChildren
from shared.settings import REPO_ROOT
from shared.web import direct_routes, serve_directly
from tests.examples import source_example, source_examples

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class _Publisher:
    def __init__(self) -> None:
        self.published: list[StorefrontEvent] = []

    async def connect_forever(self) -> None:
        return None

    async def publish_many(self, events: Sequence[PublishableEvent]) -> None:
        # As the segmenter will read them: events written straight to bytes are decoded.
        self.published.extend(decode_event(encode_event(e)) for e in events)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def _sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _shopify(topic: str, body: bytes, **changes: str | bytes | None) -> dict[str, Any]:
    headers: dict[str, str | bytes | None] = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": _sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": 'ev-1 "é"'.encode("latin-1"),  # a header is Latin-1
        "X-Shopify-Webhook-Id": "wh-1",
        **changes,
    }
    return {
        "url": "/webhooks/shopify",
        "content": body,
        "headers": {k: v for k, v in headers.items() if v is not None},
    }


def _woocommerce(topic: str, body: bytes, **changes: str | None) -> dict[str, Any]:
    headers: dict[str, str | None] = {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": "https://demo-woo.example.com/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Signature": _sign("demo-woo-secret", body),
        "X-WC-Webhook-Delivery-ID": "d-1",
        **changes,
    }
    return {
        "url": "/webhooks/woocommerce",
        "content": body,
        "headers": {k: v for k, v in headers.items() if v is not None},
    }


def _requests() -> list[dict[str, Any]]:
    requests = [_shopify(topic, path.read_bytes()) for topic, path in source_examples("shopify")]
    requests += [_woocommerce(topic, path.read_bytes()) for topic, path in source_examples("woocommerce")]
    order = source_example("shopify", "orders.create__order_with_customer")
    body = json.dumps(order).encode()
    requests += [
        _shopify("products/create", b'{"id": 1}'),
        _shopify("orders/create", body, **{"X-Shopify-Topic": None, "X-Shopify-Shop-Domain": None}),
        _shopify("orders/create", body, **{"X-Shopify-Hmac-Sha256": "bad"}),
        _shopify("orders/create", body, **{"X-Shopify-Shop-Domain": "other.myshopify.com"}),
        _shopify("orders/create", body, **{"X-Shopify-Event-Id": None, "X-Shopify-Webhook-Id": ""}),
        _shopify("orders/create", b'{"id": '),
        _shopify("orders/create", json.dumps({**order, "currency": "dollars"}).encode()),
        _shopify("orders/create", json.dumps({**order, "created_at": "2999-01-01T00:00:00Z"}).encode()),
        _shopify("orders/create", b'{"pad": "' + b"x" * (70 * 1024) + b'"}'),
        _shopify("shop/redact", b'{"shop_domain": "other.myshopify.com"}'),
        _woocommerce("order.created", b"{}", **{"X-WC-Webhook-Topic": None}),
        _woocommerce("order.created", b"{}", **{"X-WC-Webhook-Signature": "bad"}),
        _woocommerce("order.created", b"{}", **{"X-WC-Webhook-Delivery-ID": None}),
        {
            "url": "/webhooks/woocommerce",
            "content": b"webhook_id=12",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        {**_shopify("orders/create", body), "url": "/webhooks/shopify?x=%01"},
    ]
    return requests


def _without_direct_routes(app: FastAPI) -> FastAPI:
    app.user_middleware[:] = [
        m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "_DirectRoutes"
    ]
    return app


@pytest.fixture
async def apps() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI, FastAPI]]:
    settings = IngestSettings(
        stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml", ingest_max_body_bytes=64 * 1024
    )
    direct = create_app(settings, publisher=_Publisher(), clock=lambda: NOW)
    declared = _without_direct_routes(create_app(settings, publisher=_Publisher(), clock=lambda: NOW))
    async with (
        direct.router.lifespan_context(direct),
        declared.router.lifespan_context(declared),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=direct), base_url="http://i") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=declared), base_url="http://i") as b,
    ):
        yield a, b, direct, declared


async def test_webhooks_answer_as_their_declared_endpoints(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI, FastAPI],
) -> None:
    direct, declared, direct_app, declared_app = apps
    for request in _requests():
        a = await direct.post(**request)
        b = await declared.post(**request)
        assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw, b.content), request
        assert a.status_code < 500
    published_direct = direct_app.state.ingest.publisher.published
    published_declared = declared_app.state.ingest.publisher.published
    assert published_direct == published_declared
    assert len(published_direct) >= 12
    accepted = await direct.post(**_shopify("customers/create", b'{"id": 7}'))
    assert accepted.content == '{"status":"accepted","event_id":"shopify:ev-1 \\"é\\""}'.encode()


def _segment_batches() -> list[dict[str, Any]]:
    call = {
        "type": "track",
        "event": "Product Viewed",
        "messageId": "m-1",
        "anonymousId": "a-1",
        "timestamp": "2026-11-26T11:59:00.000Z",
        "properties": {"product_id": "p-1", "price": 12.5, "currency": "eur"},
        "context": {"page": {"url": "https://shop.example.com/p"}, "locale": "pt-BR"},
    }
    server = {"Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode()}
    browser = {
        "Authorization": "Basic " + base64.b64encode(b"demo-browser-key:").decode(),
        "Origin": "http://localhost:3000",
    }
    body = json.dumps({"batch": [call, {**call, "messageId": "m-2", "type": "identify", "userId": "u"}]})
    requests: list[dict[str, Any]] = []
    for path in ("/v1/batch", "/v1/b", "/v1/import", "/v1/import/"):
        requests += [
            {"url": path, "content": body, "headers": server},
            {"url": path, "content": body, "headers": {**server, "Origin": "http://localhost:3000"}},
            {"url": path, "content": body, "headers": {**server, "Origin": "https://evil.example"}},
            {"url": path, "content": body, "headers": browser},
            {"url": path, "content": json.dumps({"batch": [call], "writeKey": "demo-write-key"})},
            {"url": path, "content": body},
            {"url": path, "content": b'{"batch": [', "headers": server},
            {"url": path, "content": json.dumps({"batch": [{**call, "messageId": ""}]}), "headers": server},
            {"url": path, "content": json.dumps({"batch": [call] * 3000}), "headers": server},
            {
                "url": path,
                "content": json.dumps({"batch": [{**call, "pad": "x" * 40_000}]}),
                "headers": server,
            },
            {
                "url": path,
                "content": gzip.compress(body.encode()),
                "headers": {**server, "Content-Encoding": "gzip"},
            },
            {"url": path + "?x=%01", "content": body, "headers": server},
        ]
    for path in ("/v1/track", "/v1/t", "/v1/identify", "/v1/i", "/v1/page", "/v1/p", "/v1/screen", "/v1/s"):
        requests += [
            {"url": path, "content": json.dumps(call), "headers": server},
            {"url": path, "content": json.dumps({**call, "writeKey": "demo-write-key"})},
            {"url": path, "content": json.dumps(call), "headers": browser},
            {"url": path, "content": json.dumps({**call, "anonymousId": None}), "headers": server},
            {"url": path, "content": json.dumps({**call, "pad": "x" * 40_000}), "headers": server},
        ]
    for path in ("/v1/alias", "/v1/a", "/v1/group", "/v1/g"):
        requests += [
            {
                "url": path,
                "content": json.dumps({**call, "userId": "u", "previousId": "a-1"}),
                "headers": server,
            },
            {"url": path, "content": json.dumps({**call, "userId": "u", "groupId": "g"}), "headers": server},
            {"url": path, "content": b"[]", "headers": server},
        ]
    return requests


async def test_the_segment_api_answers_as_its_declared_endpoints(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI, FastAPI],
) -> None:
    direct, declared, direct_app, declared_app = apps
    statuses = set()
    for request in _segment_batches():
        a = await direct.post(**request)
        b = await declared.post(**request)
        assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw, b.content), request
        statuses.add(a.status_code)
    assert statuses >= {200, 400, 401, 403, 413, 422}
    published_direct = direct_app.state.ingest.publisher.published
    assert published_direct == declared_app.state.ingest.publisher.published
    assert len(published_direct) >= 30
    assert (await direct.post(**_segment_batches()[0])).content == b'{"success":true}'


def test_the_segment_api_is_served_directly() -> None:
    # Every POST route of the Segment API: the batch (and its import paths), each kind of call and its
    # analytics.js short path.
    declared = {
        r.path for r in segment.router.routes if isinstance(r, APIRoute) and "POST" in (r.methods or ())
    }
    assert len(declared) == 16
    assert {route.path for route, _ in segment.DIRECT_ROUTES} == declared
    app = create_app(IngestSettings(stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml"))
    # Served by the innermost of the app's own middleware (found by path and method in a dict).
    table = direct_routes(app)
    assert table is not None
    assert table.paths >= declared
    assert getattr(app.user_middleware[-1].cls, "__name__", "") == "_DirectRoutes"


async def test_openapi_and_other_methods_are_the_declared_routes(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI, FastAPI],
) -> None:
    direct, declared, _, _ = apps
    assert (await direct.get("/openapi.json")).json() == (await declared.get("/openapi.json")).json()
    for path in ("/webhooks/shopify", "/webhooks/woocommerce", "/v1/batch", "/v1/b", "/v1/import/"):
        a, b = await direct.get(path), await declared.get(path)
        assert a.status_code == 405
        assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw, b.content)


async def test_direct_answers_are_counted_under_the_route_template(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI, FastAPI],
) -> None:
    direct, _, _, _ = apps
    labels = {"route": "/webhooks/shopify", "method": "POST", "status": "200"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0
    await direct.post(**_shopify("customers/create", b'{"id": 7}'))
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 1


async def test_direct_handlers_serve_the_webhooks(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI, FastAPI],
) -> None:
    direct, _, direct_app, _ = apps
    calls: list[str] = []
    original = webhooks.receive_shopify

    # The declared endpoint would also reach receive_shopify; the direct route holds its own reference,
    # so the endpoint is what must not run.
    declared = next(
        r for r in webhooks.router.routes if isinstance(r, APIRoute) and r.path == "/webhooks/shopify"
    )

    async def spy(request: Request) -> Response:
        calls.append("declared")
        return await original(request)

    endpoint, declared.dependant.call = declared.dependant.call, spy
    try:
        response = await direct.post(**_shopify("customers/create", b'{"id": 7}'))
    finally:
        declared.dependant.call = endpoint
    assert response.status_code == 200
    assert calls == []
    assert direct_app.state.ingest.publisher.published


def test_serve_directly_refuses_what_it_would_change() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"{}")

    def dependency() -> None:
        return None

    router = APIRouter()

    @router.post("/plain")
    async def plain() -> dict[str, str]:
        return {}

    @router.post("/guarded", dependencies=[Depends(dependency)])
    async def guarded() -> dict[str, str]:
        return {}

    plain_route, guarded_route = (r for r in router.routes if isinstance(r, APIRoute))
    with pytest.raises(ValueError, match="not a route of this app"):
        serve_directly(FastAPI(), [(plain_route, handler)])
    prefixed = FastAPI()
    prefixed.include_router(router, prefix="/v2")
    with pytest.raises(ValueError, match="not a route of this app"):
        serve_directly(prefixed, [(plain_route, handler)])
    app = FastAPI()
    app.include_router(router)
    with pytest.raises(ValueError, match="dependencies"):
        serve_directly(app, [(guarded_route, handler)])
    serve_directly(app, [(plain_route, handler)])
    with pytest.raises(ValueError, match="served directly already"):
        serve_directly(app, [(plain_route, handler)])


def test_labelled_children_are_the_metrics_own() -> None:
    counter = Counter("test_direct_labelled_total", "test", ["a", "b"])
    children = LabelledChildren(counter)
    assert children.child("x", "y") is children.child("x", "y")
    children.child("x", "y").inc(2)
    counter.labels("x", "y").inc()
    assert REGISTRY.get_sample_value("test_direct_labelled_total", {"a": "x", "b": "y"}) == 3

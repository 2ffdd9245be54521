"""What analytics.js and the mobile libraries need from ingest, and what the public browser key may not do:
the settings document, the short paths, text/plain bodies, CORS per store, the browser key's limits."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.events import (
    CartUpdatedEvent,
    CustomerUpsertedEvent,
    CustomEvent,
    IdentityLinkedEvent,
    ProductViewedEvent,
)
from tests.examples import source_example
from tests.unit.test_ingest_segment_api import FakePublisher, _client

PAGE = "http://127.0.0.1:5173"
EVIL = "https://evil.example"


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


BROWSER = {**_basic("demo-browser-key"), "Origin": PAGE, "Content-Type": "text/plain"}
SERVER = _basic("demo-write-key")


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(publisher):
        yield http


def _call(name: str, **changes: Any) -> dict[str, Any]:
    payload = source_example("segment", name)
    payload.pop("writeKey", None)
    payload.update(changes)
    return payload


def _text(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# --- Settings document ------------------------------------------------------------------------------------


async def test_settings_document_points_the_library_at_ingest(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/projects/demo-browser-key/settings", headers={"Origin": PAGE})
    assert response.status_code == 200, response.text
    segment_io = response.json()["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == "demo-browser-key"
    assert (segment_io["apiHost"], segment_io["protocol"]) == ("ingest/v1", "http")
    assert list(response.json()["integrations"]) == ["Segment.io"]  # no device-mode destination is loaded
    assert response.json()["metrics"]["sampleRate"] == 0
    assert response.headers["access-control-allow-origin"] == PAGE


async def test_settings_use_the_public_url_when_configured(publisher: FakePublisher) -> None:
    async for http in _client(publisher, ingest_public_url="https://collect.example.com"):
        response = await http.get("/v1/projects/demo-browser-key/settings")
        segment_io = response.json()["integrations"]["Segment.io"]
        assert (segment_io["apiHost"], segment_io["protocol"]) == ("collect.example.com/v1", "https")


async def test_settings_of_an_unknown_key_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/projects/nope-nope-nope/settings", headers={"Origin": PAGE})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_write_key"


async def test_settings_refused_to_a_foreign_origin_without_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/projects/demo-browser-key/settings", headers={"Origin": EVIL})
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


# --- Short paths, text/plain, write key in the body -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "example"),
    [
        ("/v1/p", "page__product"),
        ("/v1/i", "identify__signup"),
        ("/v1/t", "track__product_viewed"),
        ("/v1/a", "alias__after_signup"),
    ],
)
async def test_short_paths_take_text_plain_with_basic_auth(
    client: httpx.AsyncClient, publisher: FakePublisher, path: str, example: str
) -> None:
    body = _call(example)
    if example == "identify__signup":
        body["traits"].pop("accepts_marketing", None)
    response = await client.post(path, content=_text(body), headers=BROWSER)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == PAGE
    assert response.headers["access-control-expose-headers"] == "Retry-After"
    assert publisher.published


async def test_analytics_js_batch_with_write_key_in_body(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    view = {**_call("track__product_viewed"), "type": "track"}
    page = {**_call("page__product"), "type": "page"}
    body = {"batch": [view, page], "sentAt": "2026-11-21T10:00:20.000Z", "writeKey": "demo-browser-key"}
    response = await client.post(
        "/v1/b", content=_text(body), headers={"Origin": PAGE, "Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert [type(e) for e in publisher.published] == [ProductViewedEvent, CustomEvent]


async def test_screen_and_group_single_calls(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    screen = {"messageId": "m-screen-1", "anonymousId": "a-1", "name": "Home", "properties": {"tab": 1}}
    assert (await client.post("/v1/screen", json=screen, headers=SERVER)).status_code == 200
    screened = publisher.published[-1]
    assert isinstance(screened, CustomEvent)
    assert screened.payload.name == "Page Viewed: Home"
    group = {"messageId": "m-group-1", "userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}}
    count = len(publisher.published)
    assert (await client.post("/v1/g", json=group, headers=SERVER)).status_code == 200
    assert len(publisher.published) == count  # acknowledged and counted, nothing published
    response = await client.post(
        "/v1/group", json={"messageId": "m-group-2", "userId": "u-1"}, headers=SERVER
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "groupId"


# --- CORS ------------------------------------------------------------------------------------------------


async def test_preflight_for_an_allowed_origin_allows_the_authorization_header(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(
        "/v1/t",
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == PAGE
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_preflight_for_another_origin_gets_no_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/v1/t", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 403
    assert not any(h.startswith("access-control-") for h in response.headers)


async def test_a_call_from_an_origin_the_store_does_not_list_is_refused(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    response = await client.post(
        "/v1/t", content=_text(_call("track__product_viewed")), headers={**BROWSER, "Origin": EVIL}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    assert publisher.published == []


async def test_errors_before_the_key_is_known_still_carry_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/t", content=b"{not json", headers=BROWSER)
    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == PAGE


# --- The browser key's permissions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "field"),
    [
        ("track__order_completed", "event"),
        ("track__order_refunded", "event"),
        ("track__survey_answered", "event"),
    ],
)
async def test_browser_key_cannot_send_orders_refunds_or_surveys(
    client: httpx.AsyncClient, publisher: FakePublisher, example: str, field: str
) -> None:
    body = _call(example)
    response = await client.post("/v1/t", content=_text(body), headers=BROWSER)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "server_key_required"
    assert response.json()["errors"][0]["field"] == field
    assert body["event"] in response.json()["detail"]
    assert publisher.published == []
    # The same call with the server key is accepted.
    assert (await client.post("/v1/track", json=body, headers=SERVER)).status_code == 200


@pytest.mark.parametrize("trait", ["accepts_marketing", "acceptsMarketing", "email_opt_in"])
async def test_browser_key_cannot_change_marketing_consent(
    client: httpx.AsyncClient, publisher: FakePublisher, trait: str
) -> None:
    body = _call("identify__signup")
    body["traits"].pop("accepts_marketing", None)
    body["traits"][trait] = True
    response = await client.post("/v1/i", content=_text(body), headers=BROWSER)
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == f"traits.{trait}"
    assert publisher.published == []


async def test_browser_key_recovery_link_must_stay_on_the_store_origins(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = _call("track__checkout_started_rudderstack")
    body["properties"]["url"] = "https://evil.example/checkout?phish=1"
    response = await client.post("/v1/t", content=_text(body), headers=BROWSER)
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "properties.url"

    body["properties"]["url"] = f"{PAGE}/cart/recover/abc"
    assert (await client.post("/v1/t", content=_text(body), headers=BROWSER)).status_code == 200
    cart = publisher.published[-1]
    assert isinstance(cart, CartUpdatedEvent)
    assert cart.payload.recovery_url == f"{PAGE}/cart/recover/abc"


async def test_browser_key_page_url_off_the_store_is_not_a_recovery_link(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = _call("track__checkout_started_rudderstack")
    body["properties"].pop("url", None)
    body["context"] = {"page": {"url": "https://evil.example/checkout"}}
    assert (await client.post("/v1/t", content=_text(body), headers=BROWSER)).status_code == 200
    cart = publisher.published[-1]
    assert isinstance(cart, CartUpdatedEvent)
    assert cart.payload.recovery_url is None
    # The server key is trusted with it.
    assert (await client.post("/v1/track", json=body, headers=SERVER)).status_code == 200
    assert isinstance(publisher.published[-1], CartUpdatedEvent)
    assert publisher.published[-1].payload.recovery_url == "https://evil.example/checkout"


async def test_one_refused_call_refuses_the_whole_browser_batch(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    view = {**_call("track__product_viewed"), "type": "track"}
    order = {**_call("track__order_completed"), "type": "track"}
    body = {"batch": [view, order], "writeKey": "demo-browser-key"}
    response = await client.post("/v1/b", content=_text(body), headers={"Origin": PAGE})
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "batch[1].event"
    assert publisher.published == []


async def test_browser_key_may_identify_with_an_email(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = _call("identify__signup")
    body["traits"].pop("accepts_marketing", None)
    response = await client.post(
        "/v1/i", content=gzip.compress(_text(body)), headers={**BROWSER, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert isinstance(publisher.published[0], CustomerUpsertedEvent)
    assert publisher.published[0].customer.email == body["traits"]["email"].strip().lower()


# --- Limits ----------------------------------------------------------------------------------------------


async def test_browser_key_is_limited_per_client_address(publisher: FakePublisher) -> None:
    async for http in _client(
        publisher,
        ingest_browser_client_rate_limit_per_second=0.01,
        ingest_browser_client_rate_limit_burst=2,
    ):
        body = _text(_call("track__product_viewed"))
        statuses = [(await http.post("/v1/t", content=body, headers=BROWSER)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = await http.post("/v1/t", content=body, headers=BROWSER)
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["access-control-expose-headers"] == "Retry-After"
        assert "client address" in limited.json()["detail"]
        # The server key has its own bucket: the store's server is not held back by the browser flood.
        assert (await http.post("/v1/track", content=body, headers=SERVER)).status_code == 200


async def test_browser_key_is_limited_per_ipv6_64_not_per_address(publisher: FakePublisher) -> None:
    async for http in _client(
        publisher,
        ingest_browser_client_rate_limit_per_second=0.01,
        ingest_browser_client_rate_limit_burst=2,
        trusted_proxies="127.0.0.1",  # the test transport's peer: a proxy that names each client
    ):
        body = _text(_call("track__product_viewed"))
        # A visitor's browser may use a new address of its /64 for each call (privacy extensions, RFC 8981).
        addresses = [*(f"2001:db8:7:9::{n + 1:x}" for n in range(3)), "2001:db8:7:a::1"]
        statuses = [
            (await http.post("/v1/t", content=body, headers={**BROWSER, "X-Forwarded-For": a})).status_code
            for a in addresses
        ]
        assert statuses == [200, 200, 429, 200]  # the last from another /64: another visitor


async def test_browser_key_has_a_bucket_of_its_own(publisher: FakePublisher) -> None:
    async for http in _client(
        publisher,
        ingest_browser_key_rate_limit_per_second=0.01,
        ingest_browser_key_rate_limit_burst=1,
    ):
        body = _text(_call("track__product_viewed"))
        assert (await http.post("/v1/t", content=body, headers=BROWSER)).status_code == 200
        limited = await http.post("/v1/t", content=body, headers=BROWSER)
        assert limited.status_code == 429
        assert "browser write key" in limited.json()["detail"]


# --- Mobile libraries: their documented batch, as they send it ------------------------------------------


async def test_analytics_kotlin_batch_gzipped_text_plain_write_key_in_body(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # analytics-kotlin's RequestFactory.upload: POST https://<apiHost>/b, Content-Type text/plain,
    # Content-Encoding gzip, the write key only in the body (no Authorization header).
    body = gzip.compress(_text(source_example("segment", "batch__analytics_kotlin_android")))
    response = await client.post(
        "/v1/b", content=body, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    screen, added, upserted, linked = publisher.published
    assert isinstance(screen, CustomEvent)
    assert screen.payload.name == "Page Viewed: Product Detail"
    assert isinstance(added, CartUpdatedEvent)
    assert (added.payload.action, added.payload.currency) == ("added", "EUR")
    assert added.payload.cart_id == "anon:6b0b3c5e-6a4f-4d0f-8b66-0e2f6b0f4a11"
    assert isinstance(upserted, CustomerUpsertedEvent)
    assert upserted.customer.store_customer_id == "app-user-8841"
    assert upserted.customer.email == "jonas.becker@example.de"
    assert isinstance(linked, IdentityLinkedEvent)
    assert linked.payload.previous_id == "6b0b3c5e-6a4f-4d0f-8b66-0e2f6b0f4a11"
    # Kotlin sends "userId": "" for a visitor not yet known: that is no user id, not an invalid one.
    assert screen.customer.store_customer_id is None


async def test_analytics_swift_batch_json_write_key_in_body(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # analytics-swift's HTTPClient.startBatchUpload: POST https://<apiHost>/b, application/json.
    response = await client.post("/v1/b", json=source_example("segment", "batch__analytics_swift_ios"))
    assert response.status_code == 200, response.text
    screen, checkout, linked = publisher.published
    assert isinstance(screen, CustomEvent)
    assert screen.payload.name == "Page Viewed: Cart"
    assert isinstance(checkout, CartUpdatedEvent)
    assert checkout.payload.cart_id == "ios-chk-5531"
    assert checkout.payload.total == Decimal("29.00")
    assert isinstance(linked, IdentityLinkedEvent)
    assert linked.customer.store_customer_id == "app-user-9120"


async def test_openapi_documents_screen_group_short_paths_and_settings(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/screen", "/v1/group", "/v1/p", "/v1/t", "/v1/i", "/v1/a", "/v1/s", "/v1/g", "/v1/b"):
        assert "post" in paths[path], path
    group = paths["/v1/group"]["post"]
    assert "not stored" in group["description"]
    assert "403" in group["responses"]
    assert "text/plain" in paths["/v1/t"]["post"]["requestBody"]["content"]
    assert "get" in paths["/v1/projects/{write_key}/settings"]

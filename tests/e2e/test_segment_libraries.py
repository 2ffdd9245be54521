"""Segment's own libraries, unchanged, against the running services: analytics.js (@segment/analytics-next
from npm) in a real headless Chromium on a page of another origin, analytics-node (@segment/analytics-node
from npm) and analytics-java (com.segment.analytics.java from Maven Central) on the store's server; and the
story they exist for: a visitor browses anonymously, puts something in the cart, says who they are, and gets
the abandoned-cart email recommending what they looked at. And Segment's plain HTTP API as its
documentation shows it, for a store's server that uses no library."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from playwright.async_api import BrowserContext, Page, Request

from shared.events import StorefrontEvent, decode_event
from shared.kafka import STOREFRONT_EVENTS
from shared.settings import REPO_ROOT
from tests.e2e.browser import EVIL_HOST, JS_DIR, chromium, page_server
from tests.e2e.conftest import RunningServices
from tests.e2e.test_notifier_flows import _signed
from tests.fixtures.stack import SmtpServer
from tests.polling import eventually

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}
JAVA_DIR = REPO_ROOT / "tests" / "java"
BROWSER_KEY = "demo-browser-key"
SERVER_KEY = "demo-write-key"
GRINDER = {
    "product_id": "p-grinder-c40",
    "sku": "C40",
    "name": "Hand Grinder C40",
    "price": 49,
    "category": "gear",
}
BEANS = {
    "product_id": "p-huila-250",
    "sku": "HUI-250",
    "name": "Colombia Huila",
    "price": 14.5,
    "category": "coffee",
}


@pytest.fixture(scope="module")
def page_port() -> Iterator[int]:
    with page_server() as port:
        yield port


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with chromium(tmp_path / "chromium-profile") as context:
        yield context


class Traffic:
    """What the page sent to ingest, as the browser saw it: (method, path, status, request headers)."""

    def __init__(self, page: Page, ingest: str) -> None:
        self.calls: list[tuple[str, str, int, dict[str, str]]] = []
        self._ingest = ingest
        page.on("requestfinished", self._finished)

    async def _finished(self, request: Request) -> None:
        if not request.url.startswith(self._ingest):
            return
        response = await request.response()
        headers = await request.all_headers()
        path = request.url.removeprefix(self._ingest)
        self.calls.append((request.method, path, response.status if response else 0, headers))

    def to(self, path: str) -> list[tuple[str, str, int, dict[str, str]]]:
        return [c for c in self.calls if c[1] == path]


async def _metric(client: httpx.AsyncClient, services: RunningServices, name: str) -> float:
    text = (await client.get(f"{services.ingest}/metrics")).text
    return sum(float(m) for m in re.findall(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE))


async def _events_of_visitor(kafka_bootstrap: str, anonymous_id: str, count: int) -> list[StorefrontEvent]:
    consumer = AIOKafkaConsumer(
        STOREFRONT_EVENTS, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[StorefrontEvent] = []
    try:
        async with asyncio.timeout(40):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for record in records:
                        assert record.value is not None
                        event = decode_event(record.value)
                        if event.customer.anonymous_id == anonymous_id:
                            found.append(event)
    finally:
        await consumer.stop()
    return found


async def _open_store(browser: BrowserContext, services: RunningServices, url: str) -> tuple[Page, Traffic]:
    page = await browser.new_page()
    traffic = Traffic(page, services.ingest)
    await page.goto(url)
    return page, traffic


def _store_url(host: str, port: int, services: RunningServices, batching: bool = False) -> str:
    return f"http://{host}:{port}/store.html?ingest={services.ingest}&key={BROWSER_KEY}" + (
        "&batching=1" if batching else ""
    )


# In the page: `analytics` is the store snippet's AnalyticsBrowser; awaiting it gives [Analytics, ctx].
BROWSE_AND_SIGN_UP = """async ({userId, email, grinder, beans}) => {
    const [analytics] = await window.analytics;
    await analytics.page("Product", {path: "/products/huila"});
    await analytics.track("Product Viewed", grinder);
    await analytics.track("Product Viewed", beans);
    await analytics.track("Product Added", {...beans, quantity: 2});
    await analytics.track("Cart Viewed", {products: [{...beans, quantity: 2}], currency: "EUR"});
    const products = [{...beans, quantity: 2}];
    await analytics.track("Checkout Started", {value: 29, currency: "EUR", products});
    await analytics.alias(userId);
    await analytics.identify(userId, {email, firstName: "Lena"});
    return analytics.user().anonymousId();
}"""


async def test_analytics_js_in_chromium_reaches_the_segmenter(
    services: RunningServices, kafka_bootstrap: str, browser: BrowserContext, page_port: int
) -> None:
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(timeout=10) as client:
        preflights = await _metric(client, services, 'ingest_cors_preflights_total{outcome="allowed"}')
        page, traffic = await _open_store(browser, services, _store_url("127.0.0.1", page_port, services))
        assert await page.evaluate("window.loaded") == "loaded"
        anonymous_id = await page.evaluate(
            BROWSE_AND_SIGN_UP,
            {"userId": user_id, "email": f"{user_id}@example.com", "grinder": GRINDER, "beans": BEANS},
        )
        events = await _events_of_visitor(kafka_bootstrap, anonymous_id, 9)

        # The library loaded its settings from ingest, then posted text/plain JSON to the short paths with
        # the write key as Basic auth, each call preceded by a CORS preflight for the authorization header.
        assert [c[2] for c in traffic.to(f"/v1/projects/{BROWSER_KEY}/settings")] == [200]
        for path, calls in (("/v1/p", 1), ("/v1/t", 5), ("/v1/a", 1), ("/v1/i", 1)):
            await eventually(partial(_answered, traffic, path, calls), 10, f"{calls} x {path}")
            for method, _, status, headers in traffic.to(path):
                assert (method, status) == ("POST", 200)
                assert headers["content-type"].startswith("text/plain")
                assert headers["authorization"].startswith("Basic ")
        assert await _metric(client, services, 'ingest_cors_preflights_total{outcome="allowed"}') > preflights

        assert sorted(e.type for e in events) == [
            "cart_updated",
            "cart_updated",
            "cart_updated",
            "custom",
            "customer_upserted",
            "identity_linked",  # alias
            "identity_linked",  # identify with both ids
            "product_viewed",
            "product_viewed",
        ]

        async def merged() -> bool:
            response = await client.get(
                f"{services.segmenter}/v1/stores/demo/customers/{user_id}", headers=API
            )
            return response.status_code == 200 and f"anon:{anonymous_id}" in response.json()["identifiers"]

        await eventually(merged, 20, "the segmenter merged the anonymous visitor into the user")


async def _answered(traffic: Traffic, path: str, count: int) -> bool:
    return len(traffic.to(path)) >= count


async def test_analytics_js_batching_mode_and_a_refused_fake_order(
    services: RunningServices, kafka_bootstrap: str, browser: BrowserContext, page_port: int
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await _metric(client, services, "ingest_segment_browser_key_refused_total")
        page, traffic = await _open_store(
            browser, services, _store_url("localhost", page_port, services, batching=True)
        )
        assert await page.evaluate("window.loaded") == "loaded"
        anonymous_id = await page.evaluate(
            """async ({grinder}) => {
                const [analytics] = await window.analytics;
                analytics.page("Product");
                analytics.track("Product Viewed", grinder);
                return analytics.user().anonymousId();
            }""",
            {"grinder": GRINDER},
        )
        events = await _events_of_visitor(kafka_bootstrap, anonymous_id, 2)
        assert sorted(e.type for e in events) == ["custom", "product_viewed"]
        await eventually(partial(_answered_with, traffic, "/v1/b", 200), 10, "a batch answered 200")
        assert traffic.to("/v1/t") == []

        # An order sent with the public key, through the library itself: ingest refuses it (403, which the
        # library drops without retrying) and it never reaches the funnel.
        await page.evaluate(
            """async () => {
                const [analytics] = await window.analytics;
                analytics.track("Order Completed", {order_id: "fake-1", total: 5000, currency: "EUR"});
            }"""
        )
        await eventually(
            partial(_answered_with, traffic, "/v1/b", 403), 15, "the batch with the fake order was refused"
        )
        assert await _metric(client, services, "ingest_segment_browser_key_refused_total") > refused


async def _answered_with(traffic: Traffic, path: str, status: int) -> bool:
    return any(c[2] == status for c in traffic.to(path))


async def test_a_page_of_an_origin_no_store_lists_cannot_load_or_send(
    services: RunningServices, browser: BrowserContext, page_port: int
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await _metric(
            client, services, 'ingest_cors_preflights_total{outcome="origin_not_allowed"}'
        )
        page, _ = await _open_store(browser, services, _store_url(EVIL_HOST, page_port, services))
        assert (await page.evaluate("window.loaded")).startswith("failed")
        outcome = await page.evaluate(
            """async ({ingest, key}) => {
                try {
                    await fetch(ingest + "/v1/t", {
                        method: "POST",
                        headers: {"Content-Type": "text/plain", "Authorization": "Basic " + btoa(key + ":")},
                        body: JSON.stringify({event: "Product Viewed", anonymousId: "x", messageId: "m"}),
                    });
                    return "sent";
                } catch (error) {
                    return "blocked";
                }
            }""",
            {"ingest": services.ingest, "key": BROWSER_KEY},
        )
        assert outcome == "blocked"
        assert (
            await _metric(client, services, 'ingest_cors_preflights_total{outcome="origin_not_allowed"}')
            > refused
        )


def _report(command: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run a library's driver program; what it reported (the JSON of its last line of output)."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _node(services: RunningServices, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Run analytics-node with the store's secret server key; returns what it reported."""
    return _report(["node", "node_client.mjs", services.ingest, SERVER_KEY, json.dumps(calls)], JS_DIR, 60)


async def test_analytics_node_drives_the_funnel(services: RunningServices, smtp_server: SmtpServer) -> None:
    user_id = f"node-{uuid.uuid4().hex[:10]}"
    email = f"{user_id}@example.com"
    report = await asyncio.to_thread(
        _node,
        services,
        [
            ("identify", {"userId": user_id, "traits": {"email": email, "firstName": "Jonas"}}),
            (
                "track",
                {
                    "userId": user_id,
                    "event": "Order Completed",
                    "properties": {
                        "order_id": f"{user_id}-1",
                        "total": 29,
                        "currency": "EUR",
                        "products": [BEANS],
                    },
                },
            ),
        ],
    )
    assert report["failures"] == []
    assert all(url == f"{services.ingest}/v1/batch" for url in report["requests"])
    async with httpx.AsyncClient(timeout=10) as client:

        async def first_time() -> bool:
            response = await client.get(
                f"{services.segmenter}/v1/stores/demo/customers/{user_id}", headers=API
            )
            body = response.json() if response.status_code == 200 else {}
            return body.get("stage") == "first_time" and body.get("orders_count") == 1

        await eventually(first_time, 20, "the analytics-node customer reached first_time")

    async def welcomed() -> bool:
        return any(m["To"] == email for m in smtp_server.messages)

    await eventually(welcomed, 30, "the order confirmation for the analytics-node customer")


def _java(services: RunningServices, user_id: str, email: str) -> dict[str, Any]:
    """Run analytics-java (tests/java, fetched by `make java-clients`) with the store's secret server key:
    an identify and an order; returns what it reported."""
    libs = JAVA_DIR / "libs"
    assert any(libs.glob("analytics-*.jar")), f"no analytics-java in {libs}: run `make java-clients`"
    command = ["java", "-cp", str(libs / "*"), "SegmentJavaClient.java", services.ingest, SERVER_KEY]
    return _report([*command, user_id, email], JAVA_DIR, 120)


async def test_analytics_java_posts_to_its_import_path_and_drives_the_funnel(
    services: RunningServices,
) -> None:
    # analytics-java posts its batches to `/v1/import/` (its Builder's DEFAULT_PATH), slash included.
    user_id = f"java-{uuid.uuid4().hex[:10]}"
    report = await asyncio.to_thread(_java, services, user_id, f"{user_id}@example.com")
    assert report["failures"] == []
    assert report["settled"] is True
    assert report["requests"]
    assert all(request == "POST /v1/import/ 200" for request in report["requests"])
    async with httpx.AsyncClient(timeout=10, headers=API) as client:

        async def profile() -> dict[str, Any]:
            response = await client.get(f"{services.segmenter}/v1/stores/demo/customers/{user_id}")
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            return body

        async def first_time() -> bool:
            return (await profile()).get("stage") == "first_time"

        await eventually(first_time, 20, "the analytics-java customer reached first_time")
        customer = await profile()
    assert (customer["email"], customer["first_name"], customer["orders_count"]) == (
        f"{user_id}@example.com",
        "Jana",
        1,
    )
    assert Decimal(customer["total_spent"]) == 29


async def test_the_http_api_as_segments_docs_show_it_without_message_ids_applies_a_retried_call_once(
    services: RunningServices,
) -> None:
    # Segment's HTTP API source docs: each call a POST of its JSON, the write key as the Basic auth user,
    # and no messageId (Spec: Common fields, "implicit": "Automatically collected by Segment"). The store's
    # server retries its refund after a timeout: the same call twice, which must take 10.00 off once.
    user_id = f"http-{uuid.uuid4().hex[:10]}"
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="milliseconds")
    order = {"order_id": f"{user_id}-1", "total": 40, "currency": "EUR", "products": [GRINDER]}
    refund = {"order_id": f"{user_id}-1", "total": 10, "currency": "EUR"}
    calls = [
        ("identify", {"userId": user_id, "traits": {"email": f"{user_id}@example.com"}, "timestamp": at}),
        ("track", {"userId": user_id, "event": "Order Completed", "properties": order, "timestamp": at}),
        ("track", {"userId": user_id, "event": "Order Refunded", "properties": refund, "timestamp": at}),
        ("track", {"userId": user_id, "event": "Order Refunded", "properties": refund, "timestamp": at}),
    ]
    async with httpx.AsyncClient(timeout=10, auth=(SERVER_KEY, "")) as client:
        for kind, body in calls:
            response = await client.post(f"{services.ingest}/v1/{kind}", json=body)
            assert response.status_code == 200, response.text

    async with httpx.AsyncClient(timeout=10, headers=API) as client:

        async def refunded() -> bool:
            response = await client.get(f"{services.segmenter}/v1/stores/demo/customers/{user_id}")
            body = response.json() if response.status_code == 200 else {}
            return body.get("orders_count") == 1 and Decimal(body.get("total_spent", "0")) == 30

        await eventually(refunded, 20, "the order, less its refund once")
        await asyncio.sleep(1)  # the retried refund, had it counted, would have come right behind
        assert await refunded()


async def test_a_cart_change_from_before_an_erasure_that_arrives_after_it_stays_forgotten(
    services: RunningServices,
) -> None:
    """analytics-node sends, after the shop's customers/redact, a cart change dated an hour earlier (a
    server's queue flushed late): the erased customer does not get that cart back. A cart change made after
    the erasure is theirs (the customer came back)."""
    customer_id = str(uuid.uuid4().int % 10**17)

    def added(cart_id: str, **timestamp: str) -> tuple[str, dict[str, Any]]:
        properties = {"cart_id": cart_id, **BEANS}
        return (
            "track",
            {"userId": customer_id, "event": "Product Added", "properties": properties, **timestamp},
        )

    identify = ("identify", {"userId": customer_id, "traits": {"email": f"c{customer_id}@example.com"}})
    assert (await asyncio.to_thread(_node, services, [identify]))["failures"] == []
    async with httpx.AsyncClient(timeout=10) as client:
        customer_url = f"{services.segmenter}/v1/stores/demo/customers/{customer_id}"

        async def known() -> bool:
            return (await client.get(customer_url, headers=API)).status_code == 200

        await eventually(known, 20, "the analytics-node customer")
        body, headers = _signed(
            "customers/redact",
            {"shop_id": 1, "shop_domain": "demo.myshopify.com", "customer": {"id": int(customer_id)}},
        )
        response = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        assert response.status_code == 200, response.text

        async def erased() -> bool:
            return bool((await client.get(customer_url, headers=API)).json().get("erased"))

        await eventually(erased, 20, "the segmenter erased the customer")
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        # One call after the other: the late change is in Kafka before the new one is sent, on the same
        # partition (one customer), so the segmenter has applied it once the new one shows.
        late = await asyncio.to_thread(_node, services, [added("k-before", timestamp=an_hour_ago)])
        assert late["failures"] == []
        assert (await asyncio.to_thread(_node, services, [added("k-after")]))["failures"] == []

        async def carts() -> list[str]:
            return [c["cart_id"] for c in (await client.get(customer_url, headers=API)).json()["carts"]]

        async def came_back() -> bool:
            return "k-after" in await carts()

        await eventually(came_back, 20, "the cart made after the erasure")
        assert await carts() == ["k-after"]


async def test_from_anonymous_browsing_to_the_abandoned_cart_email(
    services: RunningServices, smtp_server: SmtpServer, browser: BrowserContext, page_port: int
) -> None:
    user_id = f"story-{uuid.uuid4().hex[:10]}"
    email = f"{user_id}@example.com"
    page, _ = await _open_store(browser, services, _store_url("127.0.0.1", page_port, services))
    assert await page.evaluate("window.loaded") == "loaded"
    # Anonymous: two products viewed, one added to the cart. Then the visitor signs up and says who they are.
    anonymous_id = await page.evaluate(
        """async ({userId, email, grinder, beans}) => {
            const [analytics] = await window.analytics;
            await analytics.track("Product Viewed", grinder);
            await analytics.track("Product Viewed", beans);
            await analytics.track("Product Added", {...beans, quantity: 2, currency: "EUR"});
            await analytics.identify(userId, {email, firstName: "Lena"});
            return analytics.user().anonymousId();
        }""",
        {"userId": user_id, "email": email, "grinder": GRINDER, "beans": BEANS},
    )
    # The store's server records the newsletter consent given at sign-up (the browser key may not).
    report = await asyncio.to_thread(
        _node,
        services,
        [("identify", {"userId": user_id, "traits": {"email": email, "accepts_marketing": True}})],
    )
    assert report["failures"] == []

    async with httpx.AsyncClient(timeout=10) as client:

        async def merged() -> bool:
            response = await client.get(
                f"{services.segmenter}/v1/stores/demo/customers/{user_id}", headers=API
            )
            body = response.json() if response.status_code == 200 else {}
            return (
                f"anon:{anonymous_id}" in body.get("identifiers", [])
                and body.get("accepts_marketing") is True
            )

        await eventually(
            merged, 20, "the anonymous cart and views merged into the known, consenting customer"
        )

    # The demo store abandons a cart after 20 s without change.
    async def abandoned_cart_email() -> bool:
        return any(m["To"] == email and "cart" in str(m["Subject"]).lower() for m in smtp_server.messages)

    await eventually(abandoned_cart_email, 90, "the abandoned-cart email")
    mail = next(m for m in smtp_server.messages if m["To"] == email and "cart" in str(m["Subject"]).lower())
    text = mail.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "Colombia Huila" in body  # what is in the cart
    looked_at = body.split("You also looked at", 1)
    assert len(looked_at) == 2, body
    assert "Hand Grinder C40" in looked_at[1]  # viewed, not in the cart: recommended

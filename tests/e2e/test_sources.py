"""WooCommerce, Shopify's order edits and Segment (through Segment's own Python library) reach the funnel; one
delivery sent twice has one effect; and no personal data reaches the services' logs."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from segment.analytics.client import Client as SegmentClient

from services.ingest.sources import woocommerce
from shared.events import decode_event
from shared.kafka import STOREFRONT_EVENTS
from tests.e2e.conftest import RunningServices
from tests.examples import source_example
from tests.fixtures.stack import SmtpServer
from tests.polling import eventually
from tests.webhooks import signed_shopify

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}


async def _profile(client: httpx.AsyncClient, services: RunningServices, customer_id: str) -> dict[str, Any]:
    response = await client.get(f"{services.segmenter}/v1/stores/demo/customers/{customer_id}", headers=API)
    return response.json() if response.status_code == 200 else {}


def _woo_order(customer_number: int, email: str, created: datetime | None = None) -> dict[str, Any]:
    """The example WooCommerce order, of this customer, created (and last modified) at `created` (now)."""
    order = source_example("woocommerce", "order.created__processing")
    at = (created or datetime.now(UTC).replace(tzinfo=None, microsecond=0)).isoformat()
    order.update(
        id=customer_number * 10, customer_id=customer_number, date_created_gmt=at, date_modified_gmt=at
    )
    order["billing"].update(email=email, first_name="Camille", city="Lyon")
    return order


def _woo_headers(body: bytes, delivery: str, topic: str = "order.created") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": "https://demo-woo.example.com/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": "order",
        "X-WC-Webhook-Event": topic.split(".")[1],
        "X-WC-Webhook-Signature": woocommerce.sign("demo-woo-secret", body),
        "X-WC-Webhook-ID": "7",
        "X-WC-Webhook-Delivery-ID": delivery,
    }


async def _deliver(
    client: httpx.AsyncClient, services: RunningServices, source: str, versions: list[tuple[str, bytes]]
) -> None:
    """Each (topic, body) signed and sent to ingest's route of the platform, each accepted."""
    for topic, body in versions:
        if source == "shopify":
            path, headers = signed_shopify(body, topic, event_id=str(uuid.uuid4()))
        else:
            path, headers = "/webhooks/woocommerce", _woo_headers(body, uuid.uuid4().hex, topic)
        response = await client.post(f"{services.ingest}{path}", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"


async def _once_each_spent(
    client: httpx.AsyncClient, services: RunningServices, numbers: list[int], amount: str, what: str
) -> list[dict[str, Any]]:
    """The profiles of these customers, once each has spent `amount`."""

    async def reached() -> bool:
        profiles = [await _profile(client, services, str(n)) for n in numbers]
        return all(Decimal(p.get("total_spent", "0")) == Decimal(amount) for p in profiles)

    await eventually(reached, 15, what)
    return [await _profile(client, services, str(n)) for n in numbers]


async def test_woocommerce_order_twice_counts_once_and_sends_one_email(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    number = uuid.uuid4().int % 10**9
    email = f"camille.{number}@example.com"
    body = json.dumps(_woo_order(number, email)).encode()
    headers = _woo_headers(body, delivery=uuid.uuid4().hex)
    async with httpx.AsyncClient(timeout=10) as client:
        ping = await client.post(
            f"{services.ingest}/webhooks/woocommerce",
            content=b"webhook_id=7",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert ping.status_code == 200
        for _ in range(2):
            response = await client.post(
                f"{services.ingest}/webhooks/woocommerce", content=body, headers=headers
            )
            assert response.status_code == 200, response.text

        async def first_time() -> bool:
            return (await _profile(client, services, str(number))).get("stage") == "first_time"

        await eventually(first_time, 10, "the WooCommerce customer reached first_time")
        await smtp_server.wait_for_async(1)

        async def emailed() -> bool:
            return any(m["To"] == email for m in smtp_server.messages)

        await eventually(emailed, 10, "the welcome email for the WooCommerce customer")
        await asyncio.sleep(1.0)
        profile = await _profile(client, services, str(number))
    assert profile["orders_count"] == 1
    # One email; the demo store words its own welcome subject (deploy/templates/demo), greeting by name.
    [subject] = [str(m["Subject"]) for m in smtp_server.messages if m["To"] == email]
    assert subject.startswith("Thank you for your order, Camille!")


def _woo_versions(customer_number: int, email: str) -> list[tuple[str, bytes]]:
    """One WooCommerce order as the store sends it: order.created, then an order.updated after each of two
    partial refunds. wc_create_refund saves the order with a new date_modified, and its
    `woocommerce_order_refunded` hook is one of order.updated's; the order's `refunds` lists every refund so
    far, each amount negated (WC_REST_Orders_V2_Controller)."""
    created = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=3)
    order = _woo_order(customer_number, email, created)
    refunds = [
        {"id": customer_number * 10 + 1, "reason": "Beanie arrived damaged", "total": "-27.00"},
        {"id": customer_number * 10 + 2, "reason": "Late delivery", "total": "-10.00"},
    ]
    versions = []
    for listed in range(3):
        modified = created + timedelta(seconds=5) + timedelta(hours=listed)
        version = order | {"date_modified_gmt": modified.isoformat(), "refunds": refunds[:listed]}
        versions.append(("order.created" if listed == 0 else "order.updated", json.dumps(version).encode()))
    return versions


async def test_woocommerce_partial_refunds_lower_the_spend_whichever_delivery_comes_first(
    services: RunningServices,
) -> None:
    """WooCommerce has no refund webhook and a partial refund leaves the order's status alone: the refunds
    come listed in the order itself. Delivered in time order or backwards, the customer's spend drops by
    both refunds, and the order still counts once."""
    numbers = [uuid.uuid4().int % 10**9 for _ in range(2)]
    async with httpx.AsyncClient(timeout=10) as client:
        for number, backwards in zip(numbers, (False, True), strict=True):
            versions = _woo_versions(number, f"camille.{number}@example.com")
            await _deliver(client, services, "woocommerce", versions[::-1] if backwards else versions)
        what = "both customers' spend lowered by their two partial refunds"
        profiles = await _once_each_spent(client, services, numbers, "55.28", what)
    for profile in profiles:
        assert (profile["orders_count"], profile["stage"]) == (1, "first_time")


def _woo_anonymised_versions(customer_number: int, email: str) -> list[tuple[str, bytes]]:
    """One WooCommerce order: order.created, then the order.updated of WooCommerce's order eraser
    (WC_Privacy_Erasers::remove_order_personal_data, on the customer's erasure request), then the
    order.updated of a refund made after it, which lists the refund and is as anonymised."""
    created = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=3)
    order = _woo_order(customer_number, email, created)
    removed = source_example("woocommerce", "order.updated__personal_data_removed")
    anonymised = order | {
        "customer_id": 0,
        "billing": removed["billing"],
        "shipping": removed["shipping"],
        "date_modified_gmt": (created + timedelta(hours=1)).isoformat(),
    }
    refund = {"id": customer_number * 10 + 1, "reason": "Return", "total": "-10.00"}
    later = (created + timedelta(hours=2)).isoformat()
    refunded = anonymised | {"date_modified_gmt": later, "refunds": [refund]}
    return [
        ("order.created", json.dumps(order).encode()),
        ("order.updated", json.dumps(anonymised).encode()),
        ("order.updated", json.dumps(refunded).encode()),
    ]


async def test_woocommerce_orders_whose_personal_data_was_removed_stay_their_customers(
    services: RunningServices,
) -> None:
    """WordPress's eraser writes one placeholder address into every order it anonymises: two customers'
    anonymised orders keep to their own customers, whose details stay as they were."""
    numbers = [uuid.uuid4().int % 10**9 for _ in range(2)]
    async with httpx.AsyncClient(timeout=10) as client:
        for number in numbers:
            versions = _woo_anonymised_versions(number, f"camille.{number}@example.com")
            await _deliver(client, services, "woocommerce", versions)
        what = "each customer's spend lowered by the refund of their own order"
        profiles = await _once_each_spent(client, services, numbers, "82.28", what)
    for number, profile in zip(numbers, profiles, strict=True):
        assert (profile["orders_count"], profile["stage"]) == (1, "first_time")
        assert (profile["email"], profile["first_name"], profile["city"]) == (
            f"camille.{number}@example.com",
            "Camille",
            "Lyon",
        )


@pytest.mark.parametrize("guest", [False, True])
async def test_a_woocommerce_store_erases_a_customer_through_ingest(
    services: RunningServices, guest: bool
) -> None:
    """WooCommerce sends no erasure webhook: the store asks ingest with its API key, naming the customer as
    the segmenter's API does (a guest by `email:`), and the customer's personal data is forgotten as a
    Shopify redaction's is, their order kept."""
    number = uuid.uuid4().int % 10**9
    email = f"camille.{number}@example.com"
    order = _woo_order(number, email)
    if guest:
        order["customer_id"] = 0
    customer_id = f"email:{email}" if guest else str(number)
    async with httpx.AsyncClient(timeout=10) as client:
        await _deliver(client, services, "woocommerce", [("order.created", json.dumps(order).encode())])

        async def placed() -> bool:
            return (await _profile(client, services, customer_id)).get("email") == email

        await eventually(placed, 10, "the WooCommerce customer's profile")
        erasure = await client.post(
            f"{services.ingest}/v1/stores/demo/customers/{customer_id}/erasure", headers=API
        )
        assert erasure.status_code == 202, erasure.text

        async def erased() -> bool:
            return (await _profile(client, services, customer_id)).get("erased") is True

        await eventually(erased, 10, "the customer erased")
        profile = await _profile(client, services, customer_id)
    assert (profile["email"], profile["first_name"], profile["city"]) == (None, None, None)
    assert (profile["orders_count"], profile["total_spent"]) == (1, "92.28")


def _shopify_versions(number: int, email: str) -> list[tuple[str, bytes]]:
    """One Shopify order as the shop sends it: orders/create with two items, then the orders/updated of an
    edit that removed the second. The removed line stays in `line_items` with its `quantity` as ordered and
    a `current_quantity` of 0 (REST Order: "The line item's quantity, minus the removed quantity"), and the
    order's total is updated with the edit (Shopify Help Center, "Editing order items")."""
    edited = source_example("shopify", "orders.updated__item_removed_in_edit")
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    edited.update(id=number * 10, email=email, contact_email=email, created_at=created.isoformat())
    edited["customer"].update(id=number, email=email)
    edited["updated_at"] = (created + timedelta(hours=1)).isoformat()
    placed = copy.deepcopy(edited)
    placed.update(updated_at=created.isoformat(), total_price="408.00", current_total_price="408.00")
    for line in placed["line_items"]:
        line.update(current_quantity=1, fulfillable_quantity=1)
    return [("orders/create", json.dumps(placed).encode()), ("orders/updated", json.dumps(edited).encode())]


async def test_a_shopify_edit_takes_the_removed_item_off_whichever_delivery_comes_first(
    services: RunningServices,
) -> None:
    """An item removed in a Shopify order edit is no longer among the customer's products, whether the edit
    reaches us after its order or before it."""
    numbers = [uuid.uuid4().int % 10**9 for _ in range(2)]
    async with httpx.AsyncClient(timeout=10) as client:
        for number, backwards in zip(numbers, (False, True), strict=True):
            versions = _shopify_versions(number, f"jon.{number}@example.com")
            await _deliver(client, services, "shopify", versions[::-1] if backwards else versions)
        what = "both customers' orders held at their edit"
        profiles = await _once_each_spent(client, services, numbers, "209.00", what)
    for profile in profiles:
        assert (profile["orders_count"], profile["stage"]) == (1, "first_time")
        assert [p["product_id"] for p in profile["last_products"]] == ["632910392"]


def _two_orders(source: str, number: int) -> tuple[list[tuple[str, bytes]], tuple[str, bytes]]:
    """Two orders of one customer, placed an hour apart, and the deletion of the second: Shopify's
    orders/delete, or WooCommerce's order.deleted (the order moved to the trash), each of whose payloads is
    the order's id alone (Shopify's webhook reference; WC_Webhook::build_payload)."""
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    orders = []
    for n, at in enumerate((first, first + timedelta(hours=1))):
        if source == "shopify":
            order = source_example("shopify", "orders.create__order_with_customer")
            email = f"jon.{number}@example.com"
            order.update(
                id=number * 10 + n, email=email, created_at=at.isoformat(), updated_at=at.isoformat()
            )
            order["customer"].update(id=number, email=email)
            orders.append(("orders/create", json.dumps(order).encode()))
        else:
            order = _woo_order(number, f"camille.{number}@example.com", at.replace(tzinfo=None))
            order["id"] = number * 10 + n
            orders.append(("order.created", json.dumps(order).encode()))
    topic = "orders/delete" if source == "shopify" else "order.deleted"
    return orders, (topic, json.dumps({"id": number * 10 + 1}).encode())


@pytest.mark.parametrize("source", ["shopify", "woocommerce"])
async def test_a_deleted_or_trashed_order_stops_counting_whichever_delivery_comes_first(
    services: RunningServices, source: str
) -> None:
    """A store deletes a test order or a duplicate (Shopify), or moves it to the trash (WooCommerce): it is
    no purchase, and the customer's other order still is. The deletion names only the order: sent after
    the orders or before them (then it waits for its order), it takes the customer back from repeat to
    first_time."""
    numbers = [uuid.uuid4().int % 10**9 for _ in range(2)]
    async with httpx.AsyncClient(timeout=10) as client:
        for number, backwards in zip(numbers, (False, True), strict=True):
            orders, deletion = _two_orders(source, number)
            await _deliver(
                client, services, source, [deletion, *orders] if backwards else [*orders, deletion]
            )

        async def deleted() -> bool:
            for number in numbers:
                profile = await _profile(client, services, str(number))
                both = {f"order:{number * 10}", f"order:{number * 10 + 1}"}
                if not both <= set(profile.get("identifiers", ())) or profile["orders_count"] != 1:
                    return False
            return True

        await eventually(deleted, 15, "each customer's second order known and no longer counted")
        profiles = [await _profile(client, services, str(n)) for n in numbers]
    one_order = "403.00" if source == "shopify" else "92.28"
    for profile in profiles:
        assert (profile["stage"], Decimal(profile["total_spent"])) == ("first_time", Decimal(one_order))
        # The history is the facts' in time order, whichever came first: the second order made the
        # customer a repeat buyer until its deletion, dated when it was heard of.
        moves = [
            (t["from_value"], t["to_value"]) for t in profile["transitions"] if t["dimension"] == "stage"
        ]
        assert moves == [("prospect", "first_time"), ("first_time", "repeat"), ("repeat", "first_time")]


async def test_a_segment_refund_naming_only_its_order_takes_the_whole_order_back(
    services: RunningServices,
) -> None:
    """Segment documents a full refund as an `Order Refunded` naming only the order (its Google Analytics
    destination: "For full refunds, fire this event whenever an order/transaction gets refunded"). Sent by
    Segment's own library, it takes the whole order back: the spend, and the stage it earned."""
    user_id = f"seg-{uuid.uuid4().hex[:10]}"
    errors: list[Any] = []
    segment = SegmentClient(
        "demo-write-key", host=services.ingest, sync_mode=True, on_error=lambda e, b: errors.append(e)
    )

    def send() -> None:
        for number, total in ((1, 39.9), (2, 20)):
            segment.track(
                user_id,
                "Order Completed",
                {"order_id": f"{user_id}-o{number}", "total": total, "currency": "EUR"},
            )
        segment.track(user_id, "Order Refunded", {"order_id": f"{user_id}-o1"})
        segment.flush()

    await asyncio.to_thread(send)
    assert errors == []
    async with httpx.AsyncClient(timeout=10) as client:

        async def refunded() -> bool:
            profile = await _profile(client, services, user_id)
            return profile.get("orders_count") == 1 and profile.get("stage") == "first_time"

        await eventually(refunded, 15, "the refunded order no longer counts")
        profile = await _profile(client, services, user_id)
    assert Decimal(profile["total_spent"]) == Decimal("20.00")
    assert [(t["from_value"], t["to_value"]) for t in profile["transitions"] if t["dimension"] == "stage"][
        -1
    ] == (
        "repeat",
        "first_time",
    )


async def _events_for(kafka_bootstrap: str, user_id: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        STOREFRONT_EVENTS, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        assert record.value is not None
                        event = decode_event(record.value)
                        if event.customer.store_customer_id == user_id:
                            found.append(event)
    finally:
        await consumer.stop()
    return found


async def test_the_official_segment_library_reaches_kafka_unchanged(
    services: RunningServices, kafka_bootstrap: str
) -> None:
    user_id = f"seg-{uuid.uuid4().hex[:10]}"
    errors: list[Any] = []
    client = SegmentClient(
        "demo-write-key",
        host=services.ingest,
        sync_mode=True,
        gzip=True,
        on_error=lambda e, b: errors.append(e),
    )

    def send() -> None:
        client.identify(
            user_id, {"email": f"{user_id}@Example.com", "firstName": "Ana"}, anonymous_id="anon-1"
        )
        client.track(
            user_id,
            "Order Completed",
            {
                "order_id": f"{user_id}-o1",
                "total": 39.9,
                "currency": "EUR",
                "products": [{"product_id": "p1", "price": 39.9}],
            },
        )
        client.track(user_id, "Newsletter Signed Up", {"list": "weekly"})
        client.flush()

    await asyncio.to_thread(send)
    assert errors == []
    events = await _events_for(kafka_bootstrap, user_id, 4)
    assert sorted(e.type for e in events) == [
        "custom",
        "customer_upserted",
        "identity_linked",
        "order_placed",
    ]
    upserted = next(e for e in events if e.type == "customer_upserted")
    assert upserted.customer.email == f"{user_id}@example.com"
    order = next(e for e in events if e.type == "order_placed")
    assert str(order.payload.total) == "39.90"
    assert all(e.event_id.startswith("segment:") for e in events)


async def test_the_same_segment_message_twice_has_one_effect(services: RunningServices) -> None:
    user_id = f"seg-{uuid.uuid4().hex[:10]}"
    message: dict[str, Any] = {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "event": "Order Completed",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"order_id": f"{user_id}-o1", "total": "20.00", "currency": "USD"},
        "writeKey": "demo-write-key",
    }
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(2):
            assert (await client.post(f"{services.ingest}/v1/track", json=message)).status_code == 200
        second = {
            **message,
            "messageId": str(uuid.uuid4()),
            "properties": {**message["properties"], "order_id": "x"},
        }
        assert (await client.post(f"{services.ingest}/v1/track", json=second)).status_code == 200

        async def repeat() -> bool:
            return (await _profile(client, services, user_id)).get("orders_count") == 2

        # The different order is processed after the duplicate: once it counts, so has the duplicate.
        await eventually(repeat, 10, "both distinct orders were counted")
        assert (await _profile(client, services, user_id))["stage"] == "repeat"


def test_no_personal_data_in_the_logs(services: RunningServices, smtp_server: SmtpServer) -> None:
    emails = {m["To"] for m in smtp_server.messages}
    # Envelope recipients too: the refused ones (bounce-*) never got a message, only an SMTP reply.
    emails |= {rcpt for envelope in smtp_server.envelopes for rcpt in envelope.rcpt_tos}
    assert emails, "runs after tests that sent emails"
    for name, path in services.logs.items():
        text = path.read_text()
        for email in emails:
            assert email not in text, f"{name} logged an email address"
        for personal in ("Camille", "María", "Valencia", "Durand"):
            assert personal not in text, f"{name} logged {personal!r}"
        # A guest's id is `email:<address>`: logged as a customer_ref, never as is.
        assert re.search(r"email:[^\s\"]+@", text) is None, f"{name} logged a guest's id"
        # Nor any other address, in an error, an SMTP reply or a traceback.
        address = re.search(r"[\w.+-]+@[\w-]+\.(com|fr|es|de|org|net)\b", text)
        assert address is None, f"{name} logged an address"

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.ingest.sources import shopify
from shared.events import CustomerUpsertedEvent, OrderPlacedEvent, decode_event, encode_event
from tests.payloads import load

NOW = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def test_signature_matches_shopify_scheme_and_rejects_tampering() -> None:
    body = b'{"id": 1}'
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert shopify.sign("s3cret", body) == expected
    assert shopify.signature_is_valid("s3cret", body, expected)
    assert not shopify.signature_is_valid("s3cret", body + b" ", expected)
    assert not shopify.signature_is_valid("other", body, expected)
    assert not shopify.signature_is_valid("s3cret", body, None)
    assert not shopify.signature_is_valid("s3cret", body, "")


def test_orders_create_becomes_order_placed() -> None:
    event = shopify.to_canonical(
        "orders/create",
        load("shopify/orders_create.json"),
        store_id="demo",
        event_id="shopify:ev1",
        received_at=NOW,
    )
    assert isinstance(event, OrderPlacedEvent)
    assert event.customer.store_customer_id == "115310627314723954"
    assert event.customer.email == "john@example.com"
    assert event.customer.first_name == "John"
    assert event.customer.city == "Ottawa"  # the customer's own address, not the shipping one
    assert event.customer.accepts_marketing is True
    assert event.payload.order_id == "820982911946154508"
    assert str(event.payload.total) == "403.00"
    assert event.payload.currency == "USD"
    assert [i.product_id for i in event.payload.line_items] == ["632910392", "632910392"]
    assert event.payload.cart_id == "68778783ad298f1c80c3bafcddeea02f"
    assert event.occurred_at.isoformat() == "2026-11-21T09:30:00-05:00"
    assert event.partition_key == "demo:115310627314723954"
    assert decode_event(encode_event(event)) == event


def test_guest_order_is_keyed_by_email() -> None:
    payload = load("shopify/orders_create.json")
    payload["customer"] = None
    event = shopify.to_canonical("orders/create", payload, store_id="demo", event_id="e", received_at=NOW)
    assert event is not None
    assert event.customer.store_customer_id is None
    assert event.partition_key == "demo:email:jon@example.com"
    assert event.customer.city == "Shippington"


def test_customers_create_becomes_customer_upserted() -> None:
    event = shopify.to_canonical(
        "customers/create",
        load("shopify/customers_create.json"),
        store_id="demo",
        event_id="e",
        received_at=NOW,
    )
    assert isinstance(event, CustomerUpsertedEvent)
    assert event.customer.store_customer_id == "706405506930370084"
    assert event.customer.email == "bob@biller.com"
    assert event.customer.accepts_marketing is None


def test_invalid_order_names_the_field() -> None:
    payload = load("shopify/orders_create.json")
    payload["total_price"] = "lots"
    with pytest.raises(ValidationError) as info:
        shopify.to_canonical("orders/create", payload, store_id="demo", event_id="e", received_at=NOW)
    assert ("total_price",) in [tuple(e["loc"]) for e in info.value.errors()]


def test_order_without_any_identifier_is_rejected() -> None:
    payload = load("shopify/orders_create.json")
    payload["customer"] = None
    payload["email"] = None
    with pytest.raises(ValidationError, match="store_customer_id, anonymous_id, email or placed_order_id"):
        shopify.to_canonical("orders/create", payload, store_id="demo", event_id="e", received_at=NOW)


def test_unused_topic_is_none() -> None:
    assert (
        shopify.to_canonical("products/update", json.loads("{}"), store_id="d", event_id="e", received_at=NOW)
        is None
    )

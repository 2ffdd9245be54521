from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.sources import shopify
from services.ingest.sources.base import Checked
from shared.events import (
    SHOP_WIDE,
    CartUpdatedEvent,
    CustomerErasedEvent,
    CustomerUpsertedEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    decode_event,
    encode_event,
)
from tests.examples import source_example, source_examples

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
        source_example("shopify", "orders.create__order_with_customer"),
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
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["customer"] = None
    event = shopify.to_canonical("orders/create", payload, store_id="demo", event_id="e", received_at=NOW)
    assert event is not None
    assert event.customer.store_customer_id is None
    assert event.partition_key == "demo:email:jon@example.com"
    assert event.customer.city == "Shippington"


def test_customers_create_becomes_customer_upserted() -> None:
    event = shopify.to_canonical(
        "customers/create",
        source_example("shopify", "customers.create__new_customer"),
        store_id="demo",
        event_id="e",
        received_at=NOW,
    )
    assert isinstance(event, CustomerUpsertedEvent)
    assert event.customer.store_customer_id == "706405506930370084"
    assert event.customer.email == "bob@biller.com"
    assert event.customer.accepts_marketing is None


def test_invalid_order_names_the_field() -> None:
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["total_price"] = "lots"
    with pytest.raises(ValidationError) as info:
        shopify.to_canonical("orders/create", payload, store_id="demo", event_id="e", received_at=NOW)
    assert ("total_price",) in [tuple(e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize("topic", ["orders/create", "orders/updated", "orders/cancelled"])
@pytest.mark.parametrize("email", [None, "", "walk-in"])
def test_an_order_naming_nobody_is_acknowledged_without_an_event(topic: str, email: str | None) -> None:
    # A point-of-sale sale without a customer: nobody the funnel could know again. A 422 would be retried
    # for hours and count against the subscription (sources/fitting.py).
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["customer"] = None
    payload["email"] = email
    assert shopify.to_canonical(topic, payload, store_id="demo", event_id="e", received_at=NOW) is None
    raw = json.dumps(payload).encode()
    assert (
        shopify.body_to_canonical(
            topic, raw, json.loads, store_id="demo", event_id="e", received_at=NOW, checked=Checked.body(raw)
        )
        is None
    )


def test_unused_topic_is_none() -> None:
    assert (
        shopify.to_canonical("products/update", json.loads("{}"), store_id="d", event_id="e", received_at=NOW)
        is None
    )


def _map(topic: str, example: str) -> object:
    return shopify.to_canonical(
        topic, source_example("shopify", example), store_id="demo", event_id="e", received_at=NOW
    )


def test_orders_updated_is_the_same_order_placed() -> None:
    event = _map("orders/updated", "orders.updated__fulfilled")
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.order_id == "820982911946154508"
    # Placed when it was created; this version of it made at its updated_at (what decides between versions).
    assert event.occurred_at == datetime(2026, 11, 21, 14, 30, tzinfo=UTC)
    assert event.payload.updated_at == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)


def _every_path(topic: str, payload: dict[str, Any]) -> list[object]:
    """The event of each way a webhook is mapped: the hand reader (from the parsed body and from the raw
    bytes) and the pydantic models it leaves unusual payloads to."""
    raw = json.dumps(payload).encode()
    common: dict[str, Any] = {"store_id": "demo", "event_id": "e", "received_at": NOW}
    return [
        shopify.to_canonical(topic, payload, **common),
        shopify.body_to_canonical(topic, raw, json.loads, checked=Checked.body(raw), **common),
        shopify._by_models(topic, payload, checked=Checked.body(raw), **common),
    ]


def test_an_edit_leaves_out_the_units_it_removed() -> None:
    # Shopify's order edit keeps a removed line in `line_items` with its `quantity` as ordered and lowers
    # its `current_quantity` ("The line item's quantity, minus the removed quantity", REST Order).
    payload = source_example("shopify", "orders.updated__item_removed_in_edit")
    events = _every_path("orders/updated", payload)
    for event in events:
        assert isinstance(event, OrderPlacedEvent)
        assert [(i.product_id, i.quantity) for i in event.payload.line_items] == [("632910392", 1)]
        assert str(event.payload.total) == "209.00"
        assert event.payload.updated_at == datetime(2026, 11, 21, 17, 15, tzinfo=UTC)
    assert events[0] == events[1] == events[2]
    # A line the edit lowered counts what is left; one without current_quantity (a payload from before
    # order editing) counts as ordered.
    payload["line_items"][0].update(quantity=3, current_quantity=2)
    del payload["line_items"][1]["current_quantity"]
    for event in _every_path("orders/updated", payload):
        assert isinstance(event, OrderPlacedEvent)
        assert [(i.product_id, i.quantity) for i in event.payload.line_items] == [
            ("632910392", 2),
            ("921728736", 1),
        ]


@pytest.mark.parametrize("value", [-1, "two", 1.5, None])
def test_a_current_quantity_shopify_never_sends_is_refused_or_ignored(value: object) -> None:
    payload = source_example("shopify", "orders.updated__item_removed_in_edit")
    payload["line_items"][0]["current_quantity"] = value
    if value is None:  # JSON's null: as if absent
        [event, *_] = _every_path("orders/updated", payload)
        assert isinstance(event, OrderPlacedEvent)
        assert [i.product_id for i in event.payload.line_items] == ["632910392"]
        return
    with pytest.raises(ValidationError) as info:
        shopify.to_canonical("orders/updated", payload, store_id="demo", event_id="e", received_at=NOW)
    assert ("line_items", 0, "current_quantity") in [tuple(e["loc"]) for e in info.value.errors()]


def test_orders_cancelled_is_a_full_refund_marked_cancelled() -> None:
    event = _map("orders/cancelled", "orders.cancelled__cancelled_order")
    assert isinstance(event, OrderRefundedEvent)
    assert event.payload.cancelled is True
    assert str(event.payload.amount) == "403.00"
    assert event.customer.store_customer_id == "115310627314723954"
    assert event.occurred_at.isoformat() == "2026-11-22T10:00:00-05:00"


def test_orders_delete_is_a_cancellation_of_that_order() -> None:
    # The payload is the deleted order's id alone.
    event = _map("orders/delete", "orders.delete__deleted_order")
    assert isinstance(event, OrderRefundedEvent)
    assert (event.payload.order_id, event.payload.cancelled, event.payload.amount) == (
        "450789469",
        True,
        Decimal(0),
    )
    assert event.customer.placed_order_id == "450789469"
    assert (event.customer.email, event.customer.store_customer_id) == (None, None)
    assert event.occurred_at == NOW


@pytest.mark.parametrize("payload", [{}, {"id": 0}, {"id": "x"}, {"id": 2**63}])
def test_orders_delete_without_a_usable_id_names_the_id(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        shopify.to_canonical("orders/delete", payload, store_id="demo", event_id="e", received_at=NOW)
    assert ("id",) in [tuple(e["loc"]) for e in info.value.errors()]


def test_refund_names_the_order_so_the_segmenter_can_find_the_customer() -> None:
    event = _map("refunds/create", "refunds.create__partial_refund")
    assert isinstance(event, OrderRefundedEvent)
    assert event.customer.placed_order_id == "820982911946154508"
    assert event.partition_key == "demo:order:820982911946154508"
    assert (str(event.payload.amount), event.payload.currency, event.payload.cancelled) == (
        "199.00",
        "USD",
        False,
    )


def test_checkout_becomes_an_open_cart_with_its_recovery_url() -> None:
    event = _map("checkouts/create", "checkouts.create__abandoned_checkout")
    assert isinstance(event, CartUpdatedEvent)
    assert event.payload.cart_id == "123123123"
    assert event.payload.completed is False
    assert event.payload.recovery_url is not None
    assert event.payload.recovery_url.endswith("/recover?key=8f5c28b1cc3b4f00")
    assert [(i.product_id, i.quantity) for i in event.payload.line_items] == [
        ("632910392", 1),
        ("921728736", 2),
    ]
    assert str(event.payload.total) == "597.00"
    assert event.customer.store_customer_id == "603851970716743426"
    assert event.customer.accepts_marketing is False


def test_a_completed_checkout_closes_the_cart() -> None:
    payload = source_example("shopify", "checkouts.create__abandoned_checkout")
    payload["completed_at"] = "2026-11-22T18:05:00-05:00"
    event = shopify.to_canonical("checkouts/update", payload, store_id="demo", event_id="e", received_at=NOW)
    assert isinstance(event, CartUpdatedEvent)
    assert event.payload.completed is True


def test_an_anonymous_checkout_is_acknowledged_not_produced() -> None:
    payload = source_example("shopify", "checkouts.create__abandoned_checkout")
    payload["customer"] = None
    payload["email"] = None
    assert (
        shopify.to_canonical("checkouts/create", payload, store_id="demo", event_id="e", received_at=NOW)
        is None
    )


def test_customer_update_carries_marketing_consent() -> None:
    event = _map("customers/update", "customers.update__consent_given")
    assert isinstance(event, CustomerUpsertedEvent)
    assert event.customer.accepts_marketing is True
    assert event.customer.city == "Toronto"


def test_privacy_webhooks() -> None:
    erased = _map("customers/redact", "customers.redact__customer")
    assert isinstance(erased, CustomerErasedEvent)
    assert (erased.customer.store_customer_id, erased.payload.scope) == ("191167", "customer")
    shop = _map("shop/redact", "shop.redact__shop")
    assert isinstance(shop, CustomerErasedEvent)
    assert (shop.customer.store_customer_id, shop.payload.scope) == (SHOP_WIDE, "shop")
    assert _map("customers/data_request", "customers.data_request__request") is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
EXAMPLES = {topic: path for topic, path in source_examples("shopify")}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), topic=st.sampled_from(sorted(EXAMPLES)))
def test_a_real_payload_with_any_field_replaced_maps_or_names_the_field(
    data: st.DataObject, topic: str
) -> None:
    # Replacing one field (top level or nested) of a real payload reaches every branch of the mapping; the
    # only acceptable failure is a ValidationError, which the API turns into a 422 naming the field.
    payload = json.loads(EXAMPLES[topic].read_text())
    target: dict[str, Any] = payload
    for nested in ("customer", "line_items", "transactions"):
        child = payload.get(nested)
        if isinstance(child, list) and child and isinstance(child[0], dict):
            child = child[0]
        if isinstance(child, dict) and data.draw(st.booleans()):
            target = child
            break
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    with contextlib.suppress(ValidationError):
        shopify.to_canonical(topic, payload, store_id="demo", event_id="e", received_at=NOW)


@settings(max_examples=200, deadline=None)
@given(topic=st.sampled_from(sorted(shopify.HANDLED_TOPICS)), payload=JSON)
def test_arbitrary_json_maps_or_raises_validation_error(topic: str, payload: Any) -> None:
    with contextlib.suppress(ValidationError):
        shopify.to_canonical(topic, payload, store_id="demo", event_id="e", received_at=NOW)

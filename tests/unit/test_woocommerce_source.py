from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.sources import woocommerce
from shared.events import (
    CustomerUpsertedEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    Source,
    StorefrontEvent,
    decode_event,
    encode_event,
)
from tests.examples import source_example, source_examples

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _map(topic: str, payload: Any) -> StorefrontEvent | None:
    return woocommerce.to_canonical(
        topic, payload, store_id="demo", event_id="woocommerce:d1", received_at=NOW
    )


def _payload(name: str) -> dict[str, Any]:
    return source_example("woocommerce", name)


# --- signatures -----------------------------------------------------------------------------------------


def test_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    body = json.dumps(_payload("order.created__processing")).encode()
    expected = base64.b64encode(hmac.new(b"demo-woo-secret", body, hashlib.sha256).digest()).decode()
    assert woocommerce.sign("demo-woo-secret", body) == expected
    assert woocommerce.signature_is_valid("demo-woo-secret", body, expected)


def test_signature_rejects_tampering_wrong_secret_and_absence() -> None:
    body = b'{"id":4821,"status":"processing"}'
    good = woocommerce.sign("demo-woo-secret", body)
    assert not woocommerce.signature_is_valid("demo-woo-secret", body.replace(b"4821", b"4822"), good)
    assert not woocommerce.signature_is_valid("demo-woo-secret", body + b" ", good)
    assert not woocommerce.signature_is_valid("another-secret", body, good)
    assert not woocommerce.signature_is_valid("demo-woo-secret", body, None)
    assert not woocommerce.signature_is_valid("demo-woo-secret", body, "")
    assert not woocommerce.signature_is_valid("demo-woo-secret", body, good[:-4])


# --- ping -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
        None,
    ],
)
def test_form_encoded_webhook_id_is_a_ping(content_type: str | None) -> None:
    assert woocommerce.is_ping(content_type, b"webhook_id=1")
    assert woocommerce.is_ping(content_type, b"webhook_id=4213\n")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"webhook_id": 1}'),
        ("application/json", json.dumps(source_example("woocommerce", "order.created__processing")).encode()),
        ("application/json", b"webhook_id=1"),
        ("application/x-www-form-urlencoded", b"webhook_id="),
        ("application/x-www-form-urlencoded", b"webhook_id=1&topic=order.created"),
        ("application/x-www-form-urlencoded", b"webhook_id=abc"),
        (None, b""),
    ],
)
def test_anything_else_is_not_a_ping(content_type: str | None, body: bytes) -> None:
    assert not woocommerce.is_ping(content_type, body)


# --- orders ---------------------------------------------------------------------------------------------


def test_processing_order_becomes_order_placed() -> None:
    event = _map("order.created", _payload("order.created__processing"))
    assert isinstance(event, OrderPlacedEvent)
    assert event.source is Source.WOOCOMMERCE
    assert (event.event_id, event.store_id, event.received_at) == ("woocommerce:d1", "demo", NOW)
    assert event.occurred_at == datetime(2026, 11, 10, 9, 30, 4, tzinfo=UTC)
    customer = event.customer
    assert customer.store_customer_id == "17"
    assert customer.email == "camille.durand@example.com"
    assert (customer.first_name, customer.last_name) == ("Camille", "Durand")
    assert customer.phone == "+33 6 12 34 56 78"
    assert (customer.city, customer.country) == ("Lyon", "FR")
    assert customer.accepts_marketing is None
    assert customer.placed_order_id is None
    order = event.payload
    assert order.order_id == "4821"
    assert order.total == Decimal("92.28")
    assert order.currency == "EUR"
    assert order.cart_id == "b1a8f3e0c95d4c8f2e7a6d5c4b3a2918"
    assert order.discount_codes == ("welcome10",)
    tee, beanie = order.line_items
    assert (tee.product_id, tee.variant_id, tee.sku, tee.title, tee.quantity, tee.price) == (
        "301",
        None,
        "TEE-ORG-WHT",
        "Organic Cotton Tee",
        2,
        Decimal("22.50"),
    )
    assert (beanie.product_id, beanie.variant_id, beanie.sku, beanie.quantity, beanie.price) == (
        "355",
        "358",
        "BEANIE-MER-CHR",
        1,
        Decimal("27.00"),
    )
    assert beanie.title == "Merino Beanie – Charcoal"  # the API's HTML entity decoded
    assert event.partition_key == "demo:17"
    assert decode_event(encode_event(event)) == event


def test_guest_order_is_keyed_by_billing_email_and_billing_address_wins() -> None:
    event = _map("order.created", _payload("order.created__guest"))
    assert isinstance(event, OrderPlacedEvent)
    customer = event.customer
    assert customer.store_customer_id is None
    assert customer.email == "noor.haddad@example.net"
    assert (customer.first_name, customer.last_name) == ("Noor", "Haddad")
    assert (customer.city, customer.country) == ("Bruxelles", "BE")
    # Billing left the phone empty; the shipping one is the best we have.
    assert customer.phone == "+32 470 12 34 56"
    assert event.partition_key == "demo:email:noor.haddad@example.net"
    assert event.payload.discount_codes == ()
    assert [(i.product_id, i.quantity, i.price) for i in event.payload.line_items] == [
        ("520", 3, Decimal("19.95"))
    ]
    assert event.payload.total == Decimal("79.62")


def test_billing_gaps_are_filled_from_shipping() -> None:
    payload = _payload("order.created__processing")
    payload["billing"].update(first_name="", city="", country="")
    payload["shipping"].update(first_name="Cam", city="Villeurbanne", country="FR")
    event = _map("order.created", payload)
    assert event is not None
    assert (event.customer.first_name, event.customer.city, event.customer.country) == (
        "Cam",
        "Villeurbanne",
        "FR",
    )


@pytest.mark.parametrize("status", ["completed", "on-hold", "processing", "wc-completed"])
def test_order_updated_with_a_paid_status_is_the_same_order_placed(status: str) -> None:
    payload = _payload("order.created__processing")
    payload["status"] = status
    payload["date_modified_gmt"] = "2026-11-11T08:12:40"
    event = _map("order.updated", payload)
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.order_id == "4821"
    # Placed at checkout, not at the update: an edit of an old order is no new purchase. The version is
    # the modification's time: the segmenter holds the content of the latest.
    assert event.occurred_at == datetime(2026, 11, 10, 9, 30, 4, tzinfo=UTC)
    assert event.payload.updated_at == datetime(2026, 11, 11, 8, 12, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    "status", ["pending", "failed", "draft", "checkout-draft", "trash", "shipped-by-plugin"]
)
@pytest.mark.parametrize("topic", ["order.created", "order.updated"])
def test_unpaid_order_is_not_a_purchase_yet(topic: str, status: str) -> None:
    payload = _payload("order.created__processing")
    payload["status"] = status
    assert _map(topic, payload) is None


def test_pending_example_is_acknowledged_without_an_event() -> None:
    assert _map("order.created", _payload("order.created__pending_payment")) is None


def test_refunded_order_is_a_full_refund() -> None:
    event = _map("order.updated", _payload("order.updated__refunded"))
    assert isinstance(event, OrderRefundedEvent)
    assert event.source is Source.WOOCOMMERCE
    assert event.occurred_at == datetime(2026, 11, 14, 14, 5, 12, tzinfo=UTC)
    assert (
        event.payload.order_id,
        event.payload.amount,
        event.payload.currency,
        event.payload.cancelled,
    ) == (
        "4821",
        Decimal("92.28"),
        "EUR",
        False,
    )
    assert event.customer.store_customer_id == "17"
    assert event.customer.email == "camille.durand@example.com"
    assert event.customer.placed_order_id == "4821"
    assert event.partition_key == "demo:17"
    assert decode_event(encode_event(event)) == event


def test_cancelled_order_is_a_refund_marked_cancelled() -> None:
    event = _map("order.updated", _payload("order.updated__cancelled"))
    assert isinstance(event, OrderRefundedEvent)
    assert (
        event.payload.order_id,
        event.payload.amount,
        event.payload.currency,
        event.payload.cancelled,
    ) == (
        "4835",
        Decimal("39.90"),
        "EUR",
        True,
    )
    assert event.occurred_at == datetime(2026, 11, 15, 8, 0, 3, tzinfo=UTC)
    assert event.customer.store_customer_id == "23"
    assert (event.customer.city, event.customer.country) == ("Berlin", "DE")


def test_a_partial_refund_comes_as_the_order_listing_its_refunds() -> None:
    # WooCommerce has no refund webhook: wc_create_refund saves the order with a new date_modified and fires
    # woocommerce_order_refunded, one of order.updated's hooks; a partial refund leaves the status alone.
    event = _map("order.updated", _payload("order.updated__partially_refunded"))
    assert isinstance(event, OrderPlacedEvent)
    assert (event.payload.order_id, event.payload.total) == ("4821", Decimal("92.28"))
    assert event.payload.updated_at == datetime(2026, 11, 12, 15, 20, 41, tzinfo=UTC)
    assert event.payload.refunds is not None
    # The REST API writes a refund's amount negated ("-27.00"): the canonical amount is what went back.
    assert [(r.refund_id, r.amount) for r in event.payload.refunds] == [("4877", Decimal("27.00"))]
    assert decode_event(encode_event(event)) == event


def test_refunds_are_listed_only_when_there_are_some() -> None:
    payload = _payload("order.updated__partially_refunded")
    payload["refunds"] = [
        {"id": 4877, "reason": "", "total": "-27.00"},
        {"id": 4878, "reason": "", "total": "-0.00"},
        {"id": 4880, "reason": "Shipping", "total": "-4.905"},
    ]
    event = _map("order.updated", payload)
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.refunds is not None
    assert [(r.refund_id, r.amount) for r in event.payload.refunds] == [
        ("4877", Decimal("27.00")),
        ("4880", Decimal("4.91")),
    ]
    payload["refunds"] = []
    event = _map("order.updated", payload)
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.refunds is None
    # An order without a refund is written as before: no `refunds` key at all.
    assert b'"refunds"' not in encode_event(event)


@pytest.mark.parametrize(
    ("refund", "field"),
    [
        ({"id": 4877, "total": "ten"}, "total"),
        ({"id": 0, "total": "-1.00"}, "id"),
        ({"total": "-1.00"}, "id"),
        ({"id": 4877, "total": "NaN"}, "total"),
    ],
)
def test_a_malformed_refund_is_refused_naming_it(refund: dict[str, Any], field: str) -> None:
    payload = _payload("order.updated__partially_refunded")
    payload["refunds"] = [refund]
    with pytest.raises(ValidationError) as caught:
        _map("order.updated", payload)
    assert ("refunds", 0, field) in [e["loc"] for e in caught.value.errors()]


def test_refund_without_modified_date_falls_back_to_creation() -> None:
    payload = _payload("order.updated__refunded")
    payload["date_modified_gmt"] = None
    event = _map("order.updated", payload)
    assert event is not None
    assert event.occurred_at == datetime(2026, 11, 10, 9, 30, 4, tzinfo=UTC)


def test_guest_refund_without_email_is_found_by_its_order() -> None:
    payload = _payload("order.created__guest")
    payload["status"] = "refunded"
    payload["billing"]["email"] = ""
    event = _map("order.updated", payload)
    assert isinstance(event, OrderRefundedEvent)
    assert event.partition_key == "demo:order:4840"


@pytest.mark.parametrize("status", ["completed", "refunded"])
@pytest.mark.parametrize("email", ["deleted@site.invalid", " Deleted@Site.Invalid"])
def test_an_order_whose_personal_data_the_store_removed_names_only_itself(status: str, email: str) -> None:
    # WooCommerce's order eraser (WC_Privacy_Erasers::remove_order_personal_data) writes WordPress's
    # placeholder address (wp_privacy_anonymize_data), zeroes customer_id and saves: an order.updated.
    payload = _payload("order.updated__personal_data_removed")
    payload["status"] = status
    payload["billing"]["email"] = email
    event = _map("order.updated", payload)
    assert isinstance(event, OrderPlacedEvent | OrderRefundedEvent)
    assert event.customer.model_dump(exclude_none=True) == {"placed_order_id": "4821"}
    assert event.partition_key == "demo:order:4821"
    assert event.payload.order_id == "4821"
    if isinstance(event, OrderPlacedEvent):
        assert (event.payload.total, len(event.payload.line_items)) == (Decimal("92.28"), 2)
        assert event.payload.updated_at == datetime(2026, 11, 25, 9, 0, 12, tzinfo=UTC)
    assert decode_event(encode_event(event)) == event


def test_only_the_wordpress_placeholder_marks_an_order_anonymised() -> None:
    payload = _payload("order.created__processing")
    payload["billing"]["email"] = "deleted@shop.invalid"
    event = _map("order.created", payload)
    assert event is not None
    assert (event.customer.store_customer_id, event.customer.email) == ("17", "deleted@shop.invalid")


def test_line_item_edge_cases() -> None:
    payload = _payload("order.created__processing")
    tee, beanie = payload["line_items"]
    tee.update(product_id=0, variation_id=0, sku="", price=None, total="10.00", quantity=3)
    beanie.update(product_id=0, price=3.3333333333)
    event = _map("order.created", payload)
    assert isinstance(event, OrderPlacedEvent)
    deleted, variation_only = event.payload.line_items
    # A deleted product: the line item id keeps it distinct; without `price` the total is spread per unit.
    assert (deleted.product_id, deleted.variant_id, deleted.sku, deleted.price) == (
        "line:4826",
        None,
        None,
        Decimal("3.33"),
    )
    assert (variation_only.product_id, variation_only.variant_id, variation_only.price) == (
        "358",
        "358",
        Decimal("3.33"),
    )


def test_empty_cart_hash_and_coupon_codes_are_absent() -> None:
    payload = _payload("order.created__processing")
    payload["cart_hash"] = ""
    payload["coupon_lines"] = [{"code": ""}, {"code": "freeship"}]
    event = _map("order.created", payload)
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.cart_id is None
    assert event.payload.discount_codes == ("freeship",)


@pytest.mark.parametrize(
    ("total", "expected"), [("30.125", "30.13"), ("30.1249", "30.12"), ("-0.00", "0.00")]
)
def test_totals_are_rounded_to_unsigned_cents(total: str, expected: str) -> None:
    payload = _payload("order.created__processing")
    payload.update(currency="KWD", total=total)  # KWD stores keep three decimals
    event = _map("order.created", payload)
    assert isinstance(event, OrderPlacedEvent)
    assert str(event.payload.total) == expected


# --- customers ------------------------------------------------------------------------------------------


def test_customer_created_becomes_customer_upserted() -> None:
    event = _map("customer.created", _payload("customer.created__checkout_signup"))
    assert isinstance(event, CustomerUpsertedEvent)
    assert event.source is Source.WOOCOMMERCE
    customer = event.customer
    assert customer.store_customer_id == "31"
    assert customer.email == "aiko.tanaka@example.org"
    assert (customer.first_name, customer.last_name) == ("Aiko", "Tanaka")
    assert customer.phone == "+81 6 6212 3456"
    assert (customer.city, customer.country) == ("Osaka", "JP")
    assert customer.accepts_marketing is None
    assert event.payload.created_at == datetime(2026, 11, 9, 15, 42, 18, tzinfo=UTC)
    assert event.occurred_at == datetime(2026, 11, 9, 15, 42, 18, tzinfo=UTC)
    assert event.partition_key == "demo:31"
    assert decode_event(encode_event(event)) == event


def test_customer_updated_uses_the_modification_time() -> None:
    event = _map("customer.updated", _payload("customer.updated__address_changed"))
    assert isinstance(event, CustomerUpsertedEvent)
    assert event.customer.store_customer_id == "17"
    assert event.customer.city == "Nantes"
    assert event.payload.created_at == datetime(2026, 2, 19, 10, 20, 45, tzinfo=UTC)
    assert event.occurred_at == datetime(2026, 11, 13, 17, 3, 27, tzinfo=UTC)


def test_customer_without_dates_happened_when_received() -> None:
    payload = _payload("customer.created__checkout_signup")
    payload["date_created_gmt"] = payload["date_modified_gmt"] = None
    event = _map("customer.created", payload)
    assert event is not None
    assert event.occurred_at == NOW


# --- dates ----------------------------------------------------------------------------------------------


def test_gmt_dates_become_utc_aware_whatever_their_form() -> None:
    payload = _payload("order.created__processing")
    payload["date_created_gmt"] = "2026-11-10T10:30:04+01:00"
    event = _map("order.created", payload)
    assert event is not None
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == datetime(2026, 11, 10, 9, 30, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("_topic", "path"), source_examples("woocommerce"), ids=lambda v: getattr(v, "name", v)
)
def test_every_example_has_utc_aware_times(_topic: str, path: Any) -> None:
    topic = path.stem.split("__")[0]
    assert topic in woocommerce.HANDLED_TOPICS
    event = _map(topic, json.loads(path.read_text()))
    if event is not None:
        assert event.occurred_at.tzinfo is not None
        assert event.occurred_at.utcoffset() == timedelta(0)


# --- topics and invalid payloads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["product.updated", "coupon.created", "order.restored", "customer.deleted", "action.woocommerce_x", ""],
)
def test_unhandled_topic_is_none(topic: str) -> None:
    assert _map(topic, _payload("order.created__processing")) is None


@pytest.mark.parametrize(
    ("name", "field", "value", "loc"),
    [
        ("order.created__processing", "total", "lots", ("total",)),
        ("order.created__processing", "currency", "euro", ("currency",)),
        ("order.created__processing", "date_created_gmt", "yesterday", ("date_created_gmt",)),
        ("order.created__processing", "id", None, ("id",)),
        (
            "order.created__processing",
            "line_items",
            [{"id": 1, "product_id": 2, "quantity": 0}],
            ("line_items", 0, "quantity"),
        ),
        ("customer.created__checkout_signup", "id", "abc", ("id",)),
    ],
)
def test_invalid_payload_names_the_field(name: str, field: str, value: Any, loc: tuple[Any, ...]) -> None:
    payload = _payload(name)
    payload[field] = value
    topic = "order.created" if name.startswith("order") else "customer.created"
    with pytest.raises(ValidationError) as info:
        _map(topic, payload)
    assert loc in [tuple(e["loc"]) for e in info.value.errors()]


def test_missing_field_is_named() -> None:
    payload = _payload("order.created__processing")
    del payload["status"]
    with pytest.raises(ValidationError) as info:
        _map("order.updated", payload)
    assert ("status",) in [tuple(e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize("email", ["", "not an address", None])
def test_a_guest_order_without_an_email_is_acknowledged_without_an_event(email: str | None) -> None:
    # Nobody the funnel could know again; a 422 would count against the webhook (sources/fitting.py).
    payload = _payload("order.created__guest")
    payload["billing"]["email"] = email
    assert _map("order.created", payload) is None
    # Its refund or cancellation still names the order, whose customer the segmenter may know.
    payload["status"] = "cancelled"
    event = _map("order.updated", payload)
    assert isinstance(event, OrderRefundedEvent)
    assert event.customer.placed_order_id == str(payload["id"])


@pytest.mark.parametrize("order_id", [4835, "4835"])
def test_an_order_moved_to_the_trash_is_a_cancellation_of_that_order(order_id: int | str) -> None:
    # WooCommerce sends a deleted resource's id alone, as the hook gave it (an integer, or digits).
    event = _map("order.deleted", {"id": order_id})
    assert isinstance(event, OrderRefundedEvent)
    assert (event.payload.order_id, event.payload.cancelled, event.payload.amount) == (
        "4835",
        True,
        Decimal(0),
    )
    assert event.payload.in_full is None  # a cancellation takes the whole order back: no amount is needed
    # Nothing else is known: the order names its customer, and the time is when we heard of it.
    assert event.customer.placed_order_id == "4835"
    assert (event.customer.email, event.customer.store_customer_id) == (None, None)
    assert event.occurred_at == NOW
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("payload", [{}, {"id": 0}, {"id": "x"}, {"id": -4}, {"id": 2**63}, {"id": None}])
def test_a_trashed_order_without_a_usable_id_names_the_id(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        _map("order.deleted", payload)
    assert ("id",) in [tuple(e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize("payload", [None, [], "order", 42, [{"id": 1}]])
def test_non_object_payload_is_a_validation_error(payload: Any) -> None:
    with pytest.raises(ValidationError):
        _map("order.created", payload)


# --- robustness -----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


def _outcome(topic: str, payload: Any) -> None:
    try:
        event = _map(topic, payload)
    except ValidationError:
        return
    assert event is None or isinstance(event, OrderPlacedEvent | OrderRefundedEvent | CustomerUpsertedEvent)


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(sorted(woocommerce.HANDLED_TOPICS)), payload=JSON)
def test_arbitrary_json_maps_or_raises_validation_error(topic: str, payload: Any) -> None:
    _outcome(topic, payload)


_BASES = {
    "order.created": ["order.created__processing", "order.created__guest", "order.created__pending_payment"],
    "order.updated": [
        "order.updated__refunded",
        "order.updated__cancelled",
        "order.updated__partially_refunded",
        "order.created__processing",
    ],
    "customer.created": ["customer.created__checkout_signup"],
    "customer.updated": ["customer.updated__address_changed"],
}
_NESTED = ("billing", "shipping", "line_items", "coupon_lines")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), topic=st.sampled_from(sorted(_BASES)))
def test_realistic_payload_with_one_field_replaced_maps_or_raises_validation_error(
    data: st.DataObject, topic: str
) -> None:
    # Random dicts rarely get past the first required field; replacing one field of a real payload (or of one
    # of its nested objects) reaches every branch of the mapping.
    payload = _payload(data.draw(st.sampled_from(_BASES[topic])))
    target: dict[str, Any] = payload
    nested = data.draw(st.sampled_from((None, *_NESTED)))
    if nested == "line_items" and payload.get("line_items"):
        target = payload["line_items"][0]
    elif nested in ("billing", "shipping") and isinstance(payload.get(nested), dict):
        target = payload[nested]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(JSON)
    _outcome(topic, payload)

"""WooCommerce records no marketing consent: a store names the meta field its opt-in checkbox writes, and that
field (on the customer or the order) becomes consent, or withdraws it. Without one, nothing is said."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.ingest.sources import woocommerce
from shared.events import CustomerUpsertedEvent, OrderPlacedEvent
from tests.examples import source_example

OPT_IN = woocommerce.ConsentField("_newsletter_opt_in")


def payload(name: str, meta: list[dict[str, Any]]) -> dict[str, Any]:
    body = source_example("woocommerce", name)
    body["meta_data"] = meta
    return body


def consent(topic: str, name: str, meta: list[dict[str, Any]], field: woocommerce.ConsentField | None) -> Any:
    event = woocommerce.to_canonical(
        topic,
        payload(name, meta),
        store_id="s",
        event_id="woocommerce:1",
        received_at=datetime(2026, 11, 30, tzinfo=UTC),
        consent=field,
    )
    assert isinstance(event, CustomerUpsertedEvent | OrderPlacedEvent)
    return event.customer.accepts_marketing


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", True), ("1", True), (True, True), ("no", False), ("", False), (False, False)],
)
def test_the_customers_opt_in_field_is_consent(value: object, expected: bool) -> None:
    meta = [{"id": 1, "key": "_newsletter_opt_in", "value": value}]
    assert consent("customer.updated", "customer.updated__address_changed", meta, OPT_IN) is expected


def test_the_orders_checkout_checkbox_is_consent() -> None:
    meta = [
        {"id": 7, "key": "_billing_other", "value": "x"},
        {"id": 8, "key": "_newsletter_opt_in", "value": "1"},
    ]
    assert consent("order.created", "order.created__processing", meta, OPT_IN) is True


def test_no_field_or_no_configured_field_says_nothing() -> None:
    assert consent("customer.updated", "customer.updated__address_changed", [], OPT_IN) is None
    meta = [{"id": 1, "key": "_newsletter_opt_in", "value": "yes"}]
    assert consent("customer.updated", "customer.updated__address_changed", meta, None) is None


def test_coupon_lines_redeem_like_shopify_discount_codes() -> None:
    body = payload("order.created__processing", [])
    body["coupon_lines"] = [{"id": 3, "code": "cart-7hq2m9xkpw4z", "discount": "5.99"}]
    event = woocommerce.to_canonical(
        "order.created",
        body,
        store_id="s",
        event_id="woocommerce:2",
        received_at=datetime(2026, 11, 30, tzinfo=UTC),
    )
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.discount_codes == ("cart-7hq2m9xkpw4z",)

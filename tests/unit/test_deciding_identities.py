"""The identities a batch writes: every identifier its events name, for the customer each event resolves to,
whether the profile keeps the identifier (its emails, anonymous and store ids) or not (an order's id)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.segmenter.service_layer.deciding import Keys, Loaded, deciding
from services.segmenter.service_layer.write_set import Changes
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreRegistry
from tests.builders import segmenter_event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _event(n: int, kind: str, payload: dict[str, Any] | None = None, **customer: Any) -> StorefrontEvent:
    return segmenter_event("demo", kind, T0 + timedelta(minutes=n), customer, payload, event_id=f"e{n}")


def _decided(*events: StorefrontEvent) -> Changes:
    changes = Changes()
    loaded = Loaded(identities={}, profiles={}, shops={}, writer=None, merged={}, forgotten={}, versions={})
    for _ in deciding(events, Keys.of(events), loaded, changes, StoreRegistry([])):
        pass
    return changes


def _order(n: int, order_id: str, **customer: Any) -> StorefrontEvent:
    items = [{"product_id": "p1", "title": "P1", "price": "10"}]
    payload = {"order_id": order_id, "total": "10.00", "currency": "EUR", "line_items": items}
    return _event(n, "order_placed", payload, **customer)


def test_every_identifier_an_event_names_is_written_for_its_customer() -> None:
    changes = _decided(
        _event(1, "product_viewed", {"product": {"product_id": "p1"}}, anonymous_id="a1"),
        _order(2, "o1", anonymous_id="a1", email="ann@example.com", store_customer_id="c1"),
        _event(
            3, "product_viewed", {"product": {"product_id": "p2"}}, anonymous_id="a2", store_customer_id="c1"
        ),
    )
    (customer,) = {p.customer_id for p in changes.profiles.values() if p.merged_into is None}
    assert {identifier: owner for (_, identifier), owner in changes.identities.items()} == {
        "anon:a1": customer,
        "anon:a2": customer,
        "email:ann@example.com": customer,
        "id:c1": customer,
        "order:o1": customer,
    }


def test_a_refund_before_its_order_is_written_under_the_orders_id_which_its_profile_does_not_keep() -> None:
    # A refund whose customer the source names by the refunded order alone waits under the order's id.
    refund = {"order_id": "o9", "amount": "5.00", "currency": "EUR"}
    changes = _decided(
        _event(1, "order_refunded", refund, placed_order_id="o9"),
        _event(2, "order_refunded", {**refund, "amount": "1.00"}, placed_order_id="o9"),
    )
    owners = {identifier: owner for (_, identifier), owner in changes.identities.items()}
    assert set(owners) == {"order:o9"}
    (profile,) = changes.profiles.values()
    assert owners["order:o9"] == profile.customer_id
    assert "order:o9" not in profile.identifiers


def test_two_customers_of_a_batch_each_have_their_identifiers_written_for_them() -> None:
    changes = _decided(
        _event(1, "customer_upserted", {}, store_customer_id="c1", email="ann@example.com"),
        _event(2, "customer_upserted", {}, store_customer_id="c2"),
        _event(
            3, "product_viewed", {"product": {"product_id": "p1"}}, store_customer_id="c2", anonymous_id="a9"
        ),
    )
    owners = {identifier: owner for (_, identifier), owner in changes.identities.items()}
    assert owners["anon:a9"] == owners["id:c2"]
    assert owners["email:ann@example.com"] == owners["id:c1"]
    assert owners["id:c1"] != owners["id:c2"]

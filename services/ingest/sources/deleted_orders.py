"""An order the store deleted (Shopify's orders/delete) or moved to the trash (WooCommerce's order.deleted):
both platforms send its id alone. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.events import Customer, OrderRefunded, OrderRefundedEvent

# ISO 4217's code for "no currency is involved": the payload says neither amount nor currency, and a
# cancellation takes the whole order back whatever its amount (the segmenter reads no refund's currency).
NO_CURRENCY = "XXX"


def cancellation(order_id: int, common: dict[str, Any], received_at: datetime) -> OrderRefundedEvent:
    """The deleted order as a cancellation: stores delete test orders, duplicates and fraud, none of them a
    purchase, so the order stops counting as a cancelled one does. The order names its customer (the
    segmenter knows whose it is, or keeps the cancellation until the order comes, in any arrival order), and
    the event is dated when we heard of it, the payload carrying no time."""
    return OrderRefundedEvent(
        **common,
        customer=Customer(placed_order_id=str(order_id)),
        occurred_at=received_at,
        payload=OrderRefunded(
            order_id=str(order_id), amount=Decimal("0"), currency=NO_CURRENCY, cancelled=True
        ),
    )

"""What a customer looked at: the few products they viewed last, newest first. Pure.

Kept on the profile so that an anonymous visitor's views follow them when they identify (a merge is a union)
and the notifier can recommend what they showed interest in before they bought anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from services.segmenter.domain.profile import ViewedProduct
from shared.storefront_event_structs import ProductViewedEvent

MAX_VIEWED: Final = 10


def viewed(history: tuple[ViewedProduct, ...], event: ProductViewedEvent) -> tuple[ViewedProduct, ...]:
    """`history` with the event's product in it; a view older than the one held changes nothing, so the
    result does not depend on the order in which views arrive."""
    item = event.payload.product
    # `LineItem.price`, read once and without its interpreted property (see figures.order_counts).
    price = Decimal(item.price_text)
    seen = ViewedProduct(
        product_id=item.product_id,
        title=item.title,
        category=item.category,
        price=price if price > 0 else None,
        viewed_at=event.occurred_at,
    )
    return newest_first((*history, seen))


def newest_first(views: Iterable[ViewedProduct]) -> tuple[ViewedProduct, ...]:
    """One entry per product (its latest view, with the details it was last shown with), newest first."""
    latest: dict[str, ViewedProduct] = {}
    for view in views:
        held = latest.get(view.product_id)
        if held is None or (view.viewed_at, view.title or "") > (held.viewed_at, held.title or ""):
            latest[view.product_id] = view
    ordered = sorted(latest.values(), key=lambda v: (v.viewed_at, v.product_id), reverse=True)
    return tuple(ordered[:MAX_VIEWED])

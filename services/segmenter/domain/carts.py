"""Open carts and their abandonment. Pure."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from services.segmenter.domain.profile import CartFact, Profile
from shared.events import CartUpdated, LineItem

MAX_CARTS = 10  # a customer with more open carts than this is a bot; keep the newest


def timer_kind(cart_id: str) -> str:
    return f"cart:{cart_id}"


def _apply_items(current: tuple[LineItem, ...], update: CartUpdated) -> tuple[LineItem, ...]:
    if update.action == "snapshot":
        return update.line_items
    by_key = {(i.product_id, i.variant_id): i for i in current}
    for item in update.line_items:
        key = (item.product_id, item.variant_id)
        held = by_key.get(key)
        if update.action == "added":
            quantity = item.quantity + (held.quantity if held else 0)
            by_key[key] = item.model_copy(update={"quantity": quantity})
        elif held is not None:
            left = held.quantity - item.quantity
            if left > 0:
                by_key[key] = held.model_copy(update={"quantity": left})
            else:
                del by_key[key]
    return tuple(by_key.values())


def updated_cart(profile: Profile, update: CartUpdated, at: datetime) -> tuple[Profile, CartFact | None]:
    """The profile with the cart updated (or closed when the checkout completed); the cart if still open.

    Facts, not arrival order, decide: activity older than one of the customer's orders belongs to a cart
    that order closed, and a whole-cart snapshot older than what is held is out of date.
    """
    held = next((c for c in profile.carts if c.cart_id == update.cart_id), None)
    unchanged = held if held is not None and held.abandoned_at is None else None
    if any(o.placed_at >= at for o in profile.orders):
        return profile, unchanged
    others = tuple(c for c in profile.carts if c.cart_id != update.cart_id)
    if update.completed:
        return profile.model_copy(update={"carts": others}), None
    if held is not None and update.action == "snapshot" and at < held.updated_at:
        return profile, unchanged
    items = _apply_items(held.items if held else (), update)
    total = (
        update.total
        if update.action == "snapshot"
        else sum((i.price * i.quantity for i in items), Decimal("0"))
    )
    cart = CartFact(
        cart_id=update.cart_id,
        items=items,
        total=total,
        currency=update.currency,
        recovery_url=update.recovery_url or (held.recovery_url if held else None),
        updated_at=max(at, held.updated_at) if held else at,
        # Activity reopens an abandoned cart; activity from before the abandonment, arriving late, does not.
        abandoned_at=held.abandoned_at if held and held.abandoned_at and at <= held.abandoned_at else None,
    )
    carts = sorted((*others, cart), key=lambda c: (c.updated_at, c.cart_id))[-MAX_CARTS:]
    return profile.model_copy(
        update={"carts": tuple(carts)}
    ), cart if items and not cart.abandoned_at else None


def mark_abandoned(profile: Profile, cart_id: str, at: datetime) -> tuple[Profile, CartFact | None]:
    """Mark an open cart abandoned; None when it is unknown, closed, or already abandoned (never twice)."""
    for cart in profile.carts:
        if cart.cart_id == cart_id and cart.abandoned_at is None:
            abandoned = cart.model_copy(update={"abandoned_at": at})
            carts = tuple(abandoned if c.cart_id == cart_id else c for c in profile.carts)
            return profile.model_copy(update={"carts": carts}), abandoned
    return profile, None

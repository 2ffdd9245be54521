"""Open carts and their abandonment, as a function of the facts about each cart. Pure.

Shopify and Segment promise no delivery order, so a cart is not edited in place as updates arrive. It keeps
the set of its dated changes (`CartFact.changes`): whole-cart snapshots and Segment's Product Added/Removed
deltas, keyed by event id. Its contents are the newest snapshot (by the source's time, then event id) with
the deltas after it folded in that order; deltas before it are already part of it. A completed checkout is
terminal (`Profile.completed_carts`): no update, older or newer, reopens it. An order closes what the cart
held up to the order (changes at or before it). Abandonment counts while no activity is newer than it.
Delivered in any order, the same facts give the same carts and the same abandonment timers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Final

from services.segmenter.domain.profile import CartChange, CartFact, ItemFact, Profile
from services.segmenter.domain.struct_functions import replace
from shared.storefront_event_structs import CartUpdated, LineItem

MAX_CARTS: Final = 10  # a customer with more open carts than this is a bot; keep the newest
# A cart keeps at most this many changes: past it, its oldest are folded into one snapshot of what they made
# (`_compacted`). Segment's Product Added and Removed are deltas, which the store's public browser key may
# send, and a cart kept every one after its newest snapshot and folded them all again for each event,
# rebuilding its items for each: in process, the next Product Added of a cart given 1,600 of distinct products
# cost 87 ms of CPU (21 ms at 800), and a few thousand from one address would hold the segmenter a second an
# event. Folding what came before the newest hundred changes is exact for changes delivered in order; a delta
# delivered after a hundred newer changes of its cart comes before the fold and is left out, as one before a
# snapshot is.
MAX_CART_CHANGES: Final = 100
# The lines a Product Added may bring a cart to: one for a product (and variant) not in a cart already holding
# this many is left out, as a real checkout would refuse it (Shopify's draft orders take at most 499 line
# items); each event of a cart costs what its lines do.
MAX_CART_ITEMS: Final = 500


def timer_kind(cart_id: str) -> str:
    return f"cart:{cart_id}"


def abandonment_due(cart: CartFact | None, delay: timedelta) -> datetime | None:
    """When an open, non-empty cart counts as abandoned: its newest activity plus the delay."""
    if cart is None or cart.abandoned_at is not None or not cart.items:
        return None
    return cart.updated_at + delay


# Sort keys by C's attrgetter rather than functions called in Python for each element: (time, event id) of
# a change, (newest activity, id) of a cart.
_change_key: Final = attrgetter("at", "event_id")
_cart_key: Final = attrgetter("updated_at", "cart_id")


def _fold(changes: Iterable[CartChange]) -> tuple[ItemFact, ...]:
    """The items these changes make, in the order given: a snapshot's as given, each delta then applied to
    one table of the items by (product, variant), made once for all the deltas after a snapshot."""
    items: tuple[ItemFact, ...] = ()
    by_key: dict[tuple[str, str | None], ItemFact] | None = None
    for change in changes:
        if change.action == "snapshot":
            items, by_key = change.items, None
            continue
        if by_key is None:
            by_key = {(i.product_id, i.variant_id): i for i in items}
        for item in change.items:
            key = (item.product_id, item.variant_id)
            held = by_key.get(key)
            if change.action == "added":
                if held is None and len(by_key) >= MAX_CART_ITEMS:
                    continue
                quantity = item.quantity + (held.quantity if held else 0)
                by_key[key] = replace(item, quantity=quantity)
            elif held is not None:
                left = held.quantity - item.quantity
                if left > 0:
                    by_key[key] = replace(held, quantity=left)
                else:
                    del by_key[key]
    return items if by_key is None else tuple(by_key.values())


def _compacted(kept: Sequence[CartChange]) -> tuple[CartChange, ...]:
    """`kept` (in order) as at most `MAX_CART_CHANGES` changes: the oldest folded into one snapshot, dated and
    named as the last of them, which makes the same items, total, currency and recovery link."""
    cut = len(kept) - MAX_CART_CHANGES + 1
    folded = kept[:cut]
    last = folded[-1]
    items = _fold(folded)
    snapshot = CartChange(
        at=last.at,
        event_id=last.event_id,
        action="snapshot",
        items=items,
        total=_total(folded, items),
        currency=last.currency,
        recovery_url=_recovery_url(folded),
    )
    return (snapshot, *kept[cut:])


def _recovery_url(kept: Sequence[CartChange]) -> str | None:
    """A cart's recovery link: the newest one its changes gave."""
    return next((c.recovery_url for c in reversed(kept) if c.recovery_url), None)


def _total(kept: Sequence[CartChange], items: tuple[ItemFact, ...]) -> Decimal:
    """A cart's total: its newest snapshot's, or after a delta what its items come to."""
    newest = kept[-1]
    if newest.action == "snapshot":
        return newest.total
    return sum((i.price * i.quantity for i in items), Decimal("0"))


def _changes(cart: CartFact) -> tuple[CartChange, ...]:
    """A cart's changes; a cart stored before changes were kept is one snapshot of what it held."""
    if cart.changes:
        return cart.changes
    return (
        CartChange(
            at=cart.updated_at,
            action="snapshot",
            items=cart.items,
            total=cart.total,
            currency=cart.currency,
            recovery_url=cart.recovery_url,
        ),
    )


def cart_of(
    cart_id: str, changes: Sequence[CartChange], abandonments: Iterable[datetime | None]
) -> CartFact | None:
    """The cart its changes make (None without any): the newest snapshot and the deltas after it; abandoned
    since the first abandonment no activity came after (activity after an abandonment reopens the cart)."""
    if changes:
        # The answer without keying and sorting where it is known: a change alone, or a snapshot given last
        # that comes after all the others (a cart's update, a Shopify cart's every one), is the only change
        # kept (were its key another's, that one would give way to it, the later of the two). About three
        # in four of the mix's cart events.
        last = changes[-1]
        if len(changes) == 1 or (last.action == "snapshot" and _comes_after(last, changes[:-1])):
            return _folded(cart_id, (last,), abandonments)
    ordered = sorted({c.event_id or c.at.isoformat(): c for c in changes}.values(), key=_change_key)
    if not ordered:
        return None
    snapshots = [i for i, c in enumerate(ordered) if c.action == "snapshot"]
    return _folded(cart_id, ordered[snapshots[-1] :] if snapshots else ordered, abandonments)


def _folded(cart_id: str, kept: Sequence[CartChange], abandonments: Iterable[datetime | None]) -> CartFact:
    """The cart these changes make, kept as `cart_of` keeps them: in (time, event id) order, one a key, the
    first a snapshot unless none is, and at most `MAX_CART_CHANGES` of them (`_compacted`)."""
    if len(kept) > MAX_CART_CHANGES:
        kept = _compacted(kept)
    items = _fold(kept)
    newest = kept[-1]
    updated_at = newest.at
    return CartFact(
        cart_id=cart_id,
        items=items,
        total=_total(kept, items),
        currency=newest.currency,
        recovery_url=_recovery_url(kept),
        updated_at=updated_at,
        abandoned_at=min((a for a in abandonments if a is not None and a >= updated_at), default=None),
        changes=tuple(kept),
    )


def _comes_after(change: CartChange, changes: Iterable[CartChange]) -> bool:
    """Whether the change comes after all these in (time, event id) order."""
    at, event_id = change.at, change.event_id
    return all(c.at < at or (c.at == at and c.event_id < event_id) for c in changes)


def _with_cart(profile: Profile, cart_id: str, cart: CartFact | None) -> Profile:
    others = [c for c in profile.carts if c.cart_id != cart_id]
    kept = sorted((*others, *([cart] if cart else [])), key=_cart_key)
    return replace(profile, carts=tuple(kept[-MAX_CARTS:]))


def _held(profile: Profile, cart_id: str) -> CartFact | None:
    for c in profile.carts:  # a loop, not next() over a generator: most profiles hold one cart or none
        if c.cart_id == cart_id:
            return c
    return None


def completed(profile: Profile, cart_id: str) -> Profile:
    """The profile with the cart's checkout completed: gone, and closed for good."""
    if cart_id in profile.completed_carts:
        return profile
    ids = tuple(sorted((*profile.completed_carts, cart_id)))
    closed = replace(profile, completed_carts=ids)
    return _with_cart(closed, cart_id, None)


def updated_cart(
    profile: Profile, update: CartUpdated, at: datetime, event_id: str = ""
) -> tuple[Profile, CartFact | None]:
    """The profile with one more fact about the cart; the cart if it is open (and not empty)."""
    if update.completed:
        return completed(profile, update.cart_id), None
    held = _held(profile, update.cart_id)
    # A completed cart stays closed; activity at or before one of the customer's orders belongs to a cart
    # that order closed.
    orders = profile.orders
    if update.cart_id in profile.completed_carts or (orders and any(o.placed_at >= at for o in orders)):
        return profile, held if abandonment_due(held, timedelta()) else None
    change = CartChange(
        at=at,
        event_id=event_id,
        action=update.action,
        items=tuple(map(item_fact, update.line_items)),
        total=Decimal(update.total_text),  # CartUpdated.total, without its interpreted property
        currency=update.currency,
        recovery_url=update.recovery_url,
    )
    cart = cart_of(
        update.cart_id, (*(_changes(held) if held else ()), change), (held.abandoned_at if held else None,)
    )
    return _with_cart(profile, update.cart_id, cart), cart if abandonment_due(cart, timedelta()) else None


def _after(cart: CartFact, at: datetime) -> CartFact | None:
    """The cart as only its changes after `at` make it; None when it has none after it."""
    return cart_of(cart.cart_id, [c for c in _changes(cart) if c.at > at], (cart.abandoned_at,))


def closed_by_order(profile: Profile, placed_at: datetime) -> tuple[Profile, list[str]]:
    """An order closes what each cart held up to it; the carts with nothing left are gone (their ids)."""
    gone: list[str] = []
    for held in profile.carts:
        if any(c.at <= placed_at for c in _changes(held)):
            cart = _after(held, placed_at)
            profile = _with_cart(profile, held.cart_id, cart)
            if cart is None:
                gone.append(held.cart_id)
    return profile, gone


def changed_after(held: Iterable[CartFact], at: datetime) -> tuple[CartFact, ...]:
    """These carts as only their changes after `at` make them; a cart with none after it is gone."""
    kept = [after for after in (_after(cart, at) for cart in held) if after is not None]
    return tuple(sorted(kept, key=_cart_key))


def merged_carts(a: Profile, b: Profile) -> tuple[tuple[CartFact, ...], tuple[str, ...]]:
    """Two profiles' carts as one customer's: the union of each cart's changes, the later abandonment."""
    completed_ids = tuple(sorted({*a.completed_carts, *b.completed_carts}))
    by_id: dict[str, list[CartFact]] = {}
    for cart in (*a.carts, *b.carts):
        if cart.cart_id not in completed_ids:
            by_id.setdefault(cart.cart_id, []).append(cart)
    built = []
    for cart_id, held in by_id.items():
        changes = [ch for c in held for ch in _changes(c)]
        one = cart_of(cart_id, changes, [c.abandoned_at for c in held])
        if one is not None:
            built.append(one)
    built.sort(key=_cart_key)
    return tuple(built[-MAX_CARTS:]), completed_ids


def mark_abandoned(profile: Profile, cart_id: str, at: datetime) -> tuple[Profile, CartFact | None]:
    """Mark a cart abandoned at `at`; the cart when this newly abandons it, None when it is unknown, closed,
    already abandoned (never twice; the earlier abandonment is the one kept), or has had activity since
    `at` (an abandonment that activity already undid)."""
    cart = _held(profile, cart_id)
    if cart is None or at < cart.updated_at:
        return profile, None
    if cart.abandoned_at is not None and cart.abandoned_at <= at:
        return profile, None
    abandoned = replace(cart, abandoned_at=at)
    carts = tuple(abandoned if c.cart_id == cart_id else c for c in profile.carts)
    return replace(profile, carts=carts), abandoned if cart.abandoned_at is None else None


def item_fact(item: LineItem) -> ItemFact:
    """A cart's line as the profile keeps it. Here, compiled, rather than beside ItemFact in profile.py
    (interpreted), and the price read from its text as `LineItem.price` does, without that interpreted
    property (see figures.order_counts): once a line of every cart event."""
    return ItemFact(
        product_id=item.product_id,
        variant_id=item.variant_id,
        sku=item.sku,
        title=item.title,
        category=item.category,
        quantity=item.quantity,
        price=Decimal(item.price_text),
    )

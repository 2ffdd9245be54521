"""`carts.cart_of`'s short cut (the one change kept, where that is known) makes the very cart that keying,
sorting and folding all the changes makes: for a cart's update of a held cart, and for any changes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.segmenter.domain import carts
from services.segmenter.domain.funnel import new_profile
from services.segmenter.domain.profile import CartChange, CartFact
from shared.storefront_event_structs import CartUpdated
from tests.builders import segmenter_event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CART = "cart-1"


def _given(line: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in line.items() if value is not None}


_times = st.integers(min_value=0, max_value=6).map(lambda h: T0 + timedelta(hours=h))
_event_ids = st.sampled_from(["", "e1", "e2", "e3", "e4"])
_lines = st.lists(
    st.builds(
        dict,
        product_id=st.sampled_from(["p1", "p2", "p3"]),
        variant_id=st.sampled_from([None, "v1"]),
        quantity=st.integers(min_value=1, max_value=3),
        price=st.sampled_from(["1.50", "10", "0"]),
    ).map(_given),
    max_size=3,
)


@st.composite
def _updates(draw: st.DrawFn) -> tuple[datetime, str, dict[str, Any]]:
    action = draw(st.sampled_from(["snapshot", "added", "removed"]))
    payload: dict[str, Any] = {
        "cart_id": CART,
        "currency": "EUR",
        "action": action,
        "line_items": draw(_lines),
    }
    if action == "snapshot":
        payload["total"] = draw(st.sampled_from(["0", "12.00", "30.50"]))
    url = draw(st.sampled_from([None, "", "https://shop.example/cart/1", "https://shop.example/cart/2"]))
    if url is not None:
        payload["recovery_url"] = url
    return draw(_times), draw(_event_ids), payload


def _update(at: datetime, payload: dict[str, Any]) -> CartUpdated:
    event = segmenter_event("demo", "cart_updated", at, {"store_customer_id": "c1"}, payload)
    assert isinstance(event.payload, CartUpdated)
    return event.payload


def _change(at: datetime, event_id: str, payload: dict[str, Any]) -> CartChange:
    update = _update(at, payload)
    return CartChange(
        at=at,
        event_id=event_id,
        action=update.action,
        items=tuple(map(carts.item_fact, update.line_items)),
        total=update.total,
        currency=update.currency,
        recovery_url=update.recovery_url,
    )


def _without_short_cut(
    changes: Sequence[CartChange], abandonments: Iterable[datetime | None]
) -> CartFact | None:
    """`cart_of` as it was before its short cut: the reference the short cut is held to."""
    ordered = sorted(
        {c.event_id or c.at.isoformat(): c for c in changes}.values(), key=attrgetter("at", "event_id")
    )
    if not ordered:
        return None
    snapshots = [i for i, c in enumerate(ordered) if c.action == "snapshot"]
    return carts._folded(CART, ordered[snapshots[-1] :] if snapshots else ordered, abandonments)


@settings(max_examples=600, deadline=None)
@given(
    held=st.lists(_updates(), max_size=4),
    legacy=st.booleans(),
    abandoned_after=st.none() | st.integers(min_value=0, max_value=7),
    new=_updates(),
)
def test_the_short_cut_makes_the_cart_that_all_the_changes_make(
    held: list[tuple[datetime, str, dict[str, Any]]],
    legacy: bool,
    abandoned_after: int | None,
    new: tuple[datetime, str, dict[str, Any]],
) -> None:
    abandoned_at = None if abandoned_after is None else T0 + timedelta(hours=abandoned_after)
    held_changes = [_change(*u) for u in held]
    held_cart = carts.cart_of(CART, held_changes, (abandoned_at,))
    assert held_cart == _without_short_cut(held_changes, (abandoned_at,))
    if held_cart is not None and legacy:
        # A cart stored before changes were kept: what it held, and no changes.
        held_cart = CartFact(
            cart_id=CART,
            items=held_cart.items,
            total=held_cart.total,
            currency=held_cart.currency,
            recovery_url=held_cart.recovery_url,
            updated_at=held_cart.updated_at,
            abandoned_at=held_cart.abandoned_at,
        )
    profile = new_profile("demo", "c1")
    if held_cart is not None:
        profile = profile.model_copy(update={"carts": (held_cart,)})
    at, event_id, payload = new
    got, _ = carts.updated_cart(profile, _update(at, payload), at, event_id)

    before = carts._changes(held_cart) if held_cart is not None else ()
    expected = _without_short_cut(
        (*before, _change(at, event_id, payload)), (held_cart.abandoned_at if held_cart else None,)
    )
    assert got.carts == ((expected,) if expected is not None else ())

"""The bounds on what one cart keeps (domain/carts.py): at most `MAX_CART_CHANGES` changes, the oldest folded
into a snapshot of what they made, and at most `MAX_CART_ITEMS` lines from Product Added. Segment's Product
Added and Removed are deltas that the store's public browser key may send, and a cart kept every one and
folded them all again for each event. Within the bounds a cart is what all its changes make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.segmenter.domain.carts import MAX_CART_CHANGES, MAX_CART_ITEMS
from services.segmenter.domain.funnel import decide
from services.segmenter.domain.profile import CartFact, Profile
from shared.funnel_rules import FunnelRules
from tests.builders import segmenter_event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RULES = FunnelRules()
# (action, product, quantity): a snapshot's lines are (product, quantity) pairs.
Change = tuple[str, Any, int]


def _event(n: int, action: str, lines: list[tuple[str, int]]) -> Any:
    prices = {p: Decimal(f"{1 + int(p[1:]) % 7}.50") for p, _ in lines}
    items = [{"product_id": p, "price": str(prices[p]), "quantity": q} for p, q in lines]
    total = sum((prices[p] * q for p, q in lines), Decimal(0))
    payload = {"cart_id": "k1", "action": action, "currency": "EUR", "total": str(total), "line_items": items}
    return segmenter_event(
        "demo",
        "cart_updated",
        T0 + timedelta(seconds=n),
        {"anonymous_id": "a1"},
        payload,
        event_id=f"e{n:05d}",
    )


def _cart(changes: list[Change]) -> CartFact:
    profile: Profile | None = None
    for n, (action, product, quantity) in enumerate(changes):
        lines = product if action == "snapshot" else [(product, quantity)]
        profile = decide(profile, _event(n, action, lines), RULES, "anon:a1").profile
    assert profile is not None
    (cart,) = profile.carts
    return cart


def _reference(changes: list[Change]) -> dict[str, int]:
    """What every change makes, folded one after another with no bound but the lines'."""
    held: dict[str, int] = {}
    for action, product, quantity in changes:
        if action == "snapshot":
            held = dict(product)
        elif action == "added":
            if product in held or len(held) < MAX_CART_ITEMS:
                held[product] = held.get(product, 0) + quantity
        elif product in held:
            left = held[product] - quantity
            if left > 0:
                held[product] = left
            else:
                del held[product]
    return held


def _lines(cart: CartFact) -> dict[str, int]:
    return {i.product_id: i.quantity for i in cart.items}


def test_a_cart_given_many_deltas_keeps_the_newest_changes_and_what_all_of_them_make() -> None:
    changes: list[Change] = [("snapshot", [("p1", 2), ("p2", 1)], 0)]
    changes += [
        ("added" if k % 3 else "removed", f"p{k % 40}", 1 + k % 2) for k in range(3 * MAX_CART_CHANGES)
    ]
    cart = _cart(changes)
    assert len(cart.changes) == MAX_CART_CHANGES
    assert cart.changes[0].action == "snapshot"
    assert _lines(cart) == _reference(changes)
    assert cart.total == sum((i.price * i.quantity for i in cart.items), Decimal(0))
    assert cart.updated_at == T0 + timedelta(seconds=len(changes) - 1)


def test_a_cart_at_the_line_bound_takes_no_new_line_but_more_of_one_it_holds() -> None:
    changes: list[Change] = [("added", f"p{k}", 1) for k in range(MAX_CART_ITEMS + 5)]
    changes += [("added", "p0", 4)]
    cart = _cart(changes)
    assert len(cart.items) == MAX_CART_ITEMS
    assert _lines(cart)["p0"] == 5
    assert f"p{MAX_CART_ITEMS}" not in _lines(cart)


_CHANGE = st.one_of(
    st.tuples(
        st.sampled_from(["added", "removed"]),
        st.sampled_from([f"p{k}" for k in range(12)]),
        st.integers(1, 3),
    ),
    st.tuples(
        st.just("snapshot"),
        st.lists(
            st.tuples(st.sampled_from([f"p{k}" for k in range(12)]), st.integers(1, 3)),
            unique_by=lambda x: x[0],
        ),
        st.just(0),
    ),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_CHANGE, min_size=MAX_CART_CHANGES + 1, max_size=2 * MAX_CART_CHANGES + 30))
def test_changes_in_order_make_the_same_cart_however_many_are_folded(changes: list[Change]) -> None:
    cart = _cart(changes)
    assert len(cart.changes) <= MAX_CART_CHANGES
    assert _lines(cart) == _reference(changes)

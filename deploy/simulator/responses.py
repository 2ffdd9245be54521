"""Customers answering their emails: some come back and order, redeeming the coupon they were sent. Pure.

The simulated history ends "now", and the notifier only messages fresh triggers, so its emails go out while
the demo runs; without this second act no coupon would ever be redeemed and no message converted. Who
answers is drawn from the seed; which coupons they hold comes from the notifier's API (the demo asks).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from deploy.simulator import catalog
from deploy.simulator.actions import OrderPlaced, Session
from deploy.simulator.people import Shopper

RESPONSE_SHARE = 0.35


@dataclass(frozen=True)
class Coupon:
    code: str
    kind: str  # percent | fixed | free_shipping | cashback
    value: Decimal


@dataclass(frozen=True)
class Invitation:
    """A customer who received an email during the run, with the unused coupons they hold."""

    shopper: Shopper
    orders_so_far: int
    coupons: tuple[Coupon, ...]


def discount(coupon: Coupon | None, subtotal: Decimal) -> Decimal:
    if coupon is None:
        return Decimal("0")
    if coupon.kind == "percent":
        return (subtotal * coupon.value / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if coupon.kind == "fixed":
        return min(coupon.value, subtotal)
    return Decimal("0")  # free shipping and cashback do not lower the items' total


def responses(seed: int, invitations: list[Invitation], at: datetime) -> list[Session]:
    """One order at `at` for each customer who answers (about RESPONSE_SHARE of them), in customer order."""
    rng = random.Random(f"loyalty-funnel-simulator:responses:{seed}")
    sessions: list[Session] = []
    for invitation in sorted(invitations, key=lambda i: i.shopper.number):
        if rng.random() >= RESPONSE_SHARE:
            continue
        shopper = invitation.shopper
        lines = catalog.pick_basket(rng, shopper.favourite_category)
        coupon = invitation.coupons[0] if invitation.coupons else None
        number = invitation.orders_so_far + 1
        order = OrderPlaced(
            action_id=f"sim-{seed}-{shopper.number}-reply{number}",
            at=at.replace(microsecond=0),
            shopper=shopper,
            identified=True,
            order_id=shopper.customer_id * 100 + number,
            number=number,
            cart_token=f"reply{shopper.customer_id}{number}",
            lines=lines,
            recovered=False,
            discount_code=coupon.code if coupon else None,
            discount=discount(coupon, catalog.basket_total(lines)),
        )
        sessions.append(Session(shopper=shopper, actions=(order,)))
    return sessions

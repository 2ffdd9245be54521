"""What simulated shoppers do at the store: timestamped storefront actions, before any wire format.

The generator produces these; the encoders turn each into a Segment call or a Shopify webhook. Each action
has an id that is stable for a seed (it becomes the Segment messageId or the X-Shopify-Event-Id), so
sending the same history twice is deduplicated downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from deploy.simulator.catalog import BasketLine, Product, basket_total
from deploy.simulator.people import Shopper


@dataclass(frozen=True)
class Action:
    action_id: str
    at: datetime
    shopper: Shopper
    # False before sign-up: analytics.js knows the visitor only by their anonymous id.
    identified: bool


@dataclass(frozen=True)
class SignedUp(Action):
    pass


@dataclass(frozen=True)
class ProductViewed(Action):
    product: Product


@dataclass(frozen=True)
class ProductAdded(Action):
    cart_token: str
    line: BasketLine


@dataclass(frozen=True)
class CheckoutStarted(Action):
    cart_token: str
    lines: tuple[BasketLine, ...]
    recovery_url: str
    # Whether an order follows in the same visit; an abandoned checkout may still be recovered later.
    converts_now: bool

    @property
    def total(self) -> Decimal:
        return basket_total(self.lines)


@dataclass(frozen=True)
class OrderPlaced(Action):
    order_id: int
    number: int  # the shopper's nth order, from 1
    cart_token: str
    lines: tuple[BasketLine, ...]
    recovered: bool  # the checkout was abandoned first, then completed later
    # A coupon the customer redeemed (see responses.py: customers answering their emails), and its value.
    discount_code: str | None = None
    discount: Decimal = Decimal("0")

    @property
    def subtotal(self) -> Decimal:
        return basket_total(self.lines)

    @property
    def total(self) -> Decimal:
        return max(self.subtotal - self.discount, Decimal("0"))


@dataclass(frozen=True)
class OrderRefunded(Action):
    refund_id: int
    order_id: int
    # Partial: a returned or damaged item, never the whole order, so the order still counts toward a stage.
    amount: Decimal
    lines: tuple[BasketLine, ...]


@dataclass(frozen=True)
class SurveyAnswer:
    statement_id: str
    scale: str
    agree: bool | None = None
    score: int | None = None


@dataclass(frozen=True)
class SurveyAnswered(Action):
    survey_id: str
    answers: tuple[SurveyAnswer, ...]
    csat: int
    ces: int
    nps: int


@dataclass(frozen=True)
class ReferralCompleted(Action):
    referral_code: str


@dataclass(frozen=True)
class Session:
    """A shopper's actions that belong together (one visit): sent in order, never split across Segment
    batches, so a checkout and the order that completes it reach the segmenter together."""

    shopper: Shopper
    actions: tuple[Action, ...]

    @property
    def at(self) -> datetime:
        return self.actions[0].at

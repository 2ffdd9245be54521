"""A customer's profile as the funnel logic sees it: plain immutable data, no session, no I/O.

Counts and figures (orders, spend, intervals, favourite categories) are derived from the facts kept here
(orders, carts, the last survey), so they can never drift from them, and merging two profiles is a union.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.events import LineItem
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.funnel_events import ProductRef, ProfileSnapshot

LAST_PRODUCTS = 5
FAVOURITE_CATEGORIES = 3


class _Fact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class OrderFact(_Fact):
    order_id: str
    placed_at: AwareDatetime
    total: Decimal
    currency: str
    refunded: Decimal = Decimal("0")
    cancelled: bool = False
    products: tuple[ProductRef, ...] = ()
    discount_codes: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        """A cancelled or fully refunded order is no purchase: it does not count toward a stage."""
        return not self.cancelled and (self.total == 0 or self.refunded < self.total)


class CartFact(_Fact):
    cart_id: str
    items: tuple[LineItem, ...] = ()
    total: Decimal = Decimal("0")
    currency: str | None = None
    recovery_url: str | None = None
    updated_at: AwareDatetime
    abandoned_at: AwareDatetime | None = None


class SurveyFact(_Fact):
    survey_id: str
    answered_at: AwareDatetime
    level: SurveyLevel
    agreed: dict[str, int] = {}
    csat: int | None = None
    ces: int | None = None
    nps: int | None = None


class Transition(_Fact):
    """One move in the funnel (stage or health), kept as history with its reason and cause."""

    dimension: Literal["stage", "health"]
    from_value: str
    to_value: str
    reason: str
    occurred_at: AwareDatetime
    event_id: str


class Profile(_Fact):
    store_id: str
    customer_id: str
    # Every identifier known to belong to this customer: "id:<store id>", "anon:<id>", "email:<address>".
    identifiers: tuple[str, ...] = ()
    stage: LoyaltyStage = LoyaltyStage.PROSPECT
    health: Health = Health.ACTIVE
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    city: str | None = None
    country: str | None = None
    timezone: str | None = None
    birthday: date | None = None
    accepts_marketing: bool | None = None
    orders: tuple[OrderFact, ...] = ()
    carts: tuple[CartFact, ...] = ()
    survey: SurveyFact | None = None
    referrals: int = 0
    erased: bool = False
    merged_into: str | None = None

    # -- derived figures -------------------------------------------------------------------------------

    @property
    def counted_orders(self) -> list[OrderFact]:
        return sorted((o for o in self.orders if o.counts), key=lambda o: (o.placed_at, o.order_id))

    @property
    def orders_count(self) -> int:
        return len(self.counted_orders)

    @property
    def total_spent(self) -> Decimal:
        return sum((o.total - o.refunded for o in self.orders if not o.cancelled), Decimal("0"))

    @property
    def currency(self) -> str | None:
        return self.orders[0].currency if self.orders else None

    @property
    def average_order_value(self) -> Decimal | None:
        counted = self.counted_orders
        if not counted:
            return None
        return (sum((o.total - o.refunded for o in counted), Decimal("0")) / len(counted)).quantize(
            Decimal("0.01")
        )

    @property
    def first_order_at(self) -> datetime | None:
        counted = self.counted_orders
        return counted[0].placed_at if counted else None

    @property
    def last_order_at(self) -> datetime | None:
        counted = self.counted_orders
        return counted[-1].placed_at if counted else None

    @property
    def median_days_between_orders(self) -> float | None:
        times = [o.placed_at for o in self.counted_orders]
        gaps = [(b - a).total_seconds() / 86400 for a, b in itertools.pairwise(times)]
        return round(statistics.median(gaps), 2) if gaps else None

    @property
    def favourite_categories(self) -> tuple[str, ...]:
        counts = Counter(p.category for o in self.counted_orders for p in o.products if p.category)
        return tuple(
            c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:FAVOURITE_CATEGORIES]
        )

    @property
    def last_products(self) -> tuple[ProductRef, ...]:
        seen: dict[str, ProductRef] = {}
        for order in reversed(self.counted_orders):
            for product in order.products:
                seen.setdefault(product.product_id, product)
        return tuple(list(seen.values())[:LAST_PRODUCTS])

    @property
    def survey_level(self) -> SurveyLevel:
        return self.survey.level if self.survey else SurveyLevel.NONE

    @property
    def open_carts(self) -> tuple[CartFact, ...]:
        return tuple(c for c in self.carts if c.abandoned_at is None)

    def snapshot(self) -> ProfileSnapshot:
        return ProfileSnapshot(
            customer_id=self.customer_id,
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            phone=self.phone,
            locale=self.locale,
            city=self.city,
            country=self.country,
            timezone=self.timezone,
            accepts_marketing=self.accepts_marketing,
            stage=self.stage,
            health=self.health,
            orders_count=self.orders_count,
            total_spent=self.total_spent,
            currency=self.currency,
            first_order_at=self.first_order_at,
            last_order_at=self.last_order_at,
            survey_level=self.survey_level,
            birthday=self.birthday,
            average_order_value=self.average_order_value,
            median_days_between_orders=self.median_days_between_orders,
            favourite_categories=self.favourite_categories,
            last_products=self.last_products,
        )

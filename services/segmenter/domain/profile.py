"""A customer's profile as the funnel logic sees it: plain data, no session, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from shared.funnel import Health, LoyaltyStage
from shared.funnel_events import ProfileSnapshot


@dataclass(frozen=True)
class Transition:
    """One move in the funnel, kept as history with the reason and the event that caused it."""

    from_stage: LoyaltyStage
    to_stage: LoyaltyStage
    reason: str
    occurred_at: datetime
    event_id: str


@dataclass(frozen=True)
class Profile:
    store_id: str
    customer_id: str
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
    accepts_marketing: bool | None = None
    orders_count: int = 0
    total_spent: Decimal = Decimal("0")
    currency: str | None = None
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    order_ids: tuple[str, ...] = field(default=())

    def snapshot(self) -> ProfileSnapshot:
        return ProfileSnapshot(
            customer_id=self.customer_id,
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
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
        )

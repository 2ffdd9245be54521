"""Funnel events: the versioned contract on topic `funnel-events`, produced by the segmenter's outbox.

Each event carries the profile snapshot the notifier needs to personalise a message, so the notifier never
reads the segmenter's tables.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared.funnel import Health, LoyaltyStage, SurveyLevel

SCHEMA_VERSION: Literal[1] = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ProfileSnapshot(_Model):
    customer_id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    city: str | None = None
    country: str | None = None
    timezone: str | None = None
    accepts_marketing: bool | None = None
    # When that consent was given or withdrawn at the source: a copy of it keeps the newer one.
    consent_at: AwareDatetime | None = None
    stage: LoyaltyStage
    health: Health = Health.ACTIVE
    orders_count: int = 0
    total_spent: Decimal = Decimal("0")
    currency: str | None = None
    first_order_at: AwareDatetime | None = None
    last_order_at: AwareDatetime | None = None
    survey_level: SurveyLevel = SurveyLevel.NONE
    birthday: date | None = None
    average_order_value: Decimal | None = None
    median_days_between_orders: float | None = None
    favourite_categories: tuple[str, ...] = ()
    last_products: tuple[ProductRef, ...] = ()
    # What the customer looked at lately, newest first (Product Viewed), bought or not.
    viewed_products: tuple[ProductRef, ...] = ()


class ProductRef(_Model):
    product_id: str
    title: str | None = None
    category: str | None = None
    price: Decimal | None = None


class StageChanged(_Model):
    from_stage: LoyaltyStage
    to_stage: LoyaltyStage
    reason: str


class HealthChanged(_Model):
    from_health: Health
    to_health: Health
    reason: str


class CartItem(_Model):
    product_id: str
    title: str | None = None
    category: str | None = None
    quantity: int = 1
    price: Decimal = Decimal("0")


class CartAbandoned(_Model):
    cart_id: str
    items: tuple[CartItem, ...] = ()
    total: Decimal = Decimal("0")
    currency: str | None = None
    recovery_url: str | None = None
    last_activity_at: AwareDatetime
    source: Literal["timer", "storefront"]


class SurveyScored(_Model):
    survey_id: str
    level: SurveyLevel
    agreed: dict[str, int] = Field(default_factory=dict, description="statements agreed with, per scale")
    csat: int | None = None
    ces: int | None = None
    nps: int | None = None


class OrderRecorded(_Model):
    """A new order counted for the customer: what the notifier needs for exits, coupons and follow-ups."""

    order_id: str
    total: Decimal
    currency: str
    items: tuple[CartItem, ...] = ()
    discount_codes: tuple[str, ...] = ()
    cart_id: str | None = None


class CustomerUpdated(_Model):
    """Contact facts changed (consent, email, phone, name...) without any other funnel event to carry them."""

    changed: tuple[str, ...] = ()


class BirthdayDue(_Model):
    birthday: date
    days_before: int


class _Envelope(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    store_id: str
    customer_id: str
    occurred_at: AwareDatetime
    caused_by: str = Field(description="event_id of the storefront event that led to this one")
    profile: ProfileSnapshot

    @property
    def partition_key(self) -> str:
        return f"{self.store_id}:{self.customer_id}"


class StageChangedEvent(_Envelope):
    type: Literal["stage_changed"] = "stage_changed"
    payload: StageChanged


class HealthChangedEvent(_Envelope):
    type: Literal["health_changed"] = "health_changed"
    payload: HealthChanged


class CartAbandonedEvent(_Envelope):
    type: Literal["cart_abandoned"] = "cart_abandoned"
    payload: CartAbandoned


class SurveyScoredEvent(_Envelope):
    type: Literal["survey_scored"] = "survey_scored"
    payload: SurveyScored


class OrderPlacedFunnelEvent(_Envelope):
    type: Literal["order_placed"] = "order_placed"
    payload: OrderRecorded


class CustomerUpdatedEvent(_Envelope):
    type: Literal["customer_updated"] = "customer_updated"
    payload: CustomerUpdated


class BirthdayDueEvent(_Envelope):
    type: Literal["birthday_due"] = "birthday_due"
    payload: BirthdayDue


class CustomerErasedFunnelEvent(_Envelope):
    """Personal data of this customer (or, with customer_id SHOP_WIDE, of the whole store) must go."""

    type: Literal["customer_erased"] = "customer_erased"


FunnelEvent = Annotated[
    StageChangedEvent
    | HealthChangedEvent
    | CartAbandonedEvent
    | SurveyScoredEvent
    | BirthdayDueEvent
    | OrderPlacedFunnelEvent
    | CustomerUpdatedEvent
    | CustomerErasedFunnelEvent,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[FunnelEvent] = TypeAdapter(FunnelEvent)


def encode_funnel_event(event: FunnelEvent) -> bytes:
    # The model's serializer straight to bytes: the very bytes of model_dump_json(...).encode() (which
    # decodes its bytes to a str, then encoded here again), as shared/events.py's encode_event writes.
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def decode_funnel_event(raw: bytes | str) -> FunnelEvent:
    return _ADAPTER.validate_json(raw)

"""Funnel events as the segmenter builds and encodes them: msgspec Structs mirroring shared/funnel_events.py.

The pydantic models in shared/funnel_events.py stay the published contract (its JSON schema, the notifier's
decoder, the REST API's ProductRef). The segmenter builds one funnel event with its profile snapshot for
about every other storefront event, and pydantic's instances cost it most of what was left of its decisions:
these Structs hold the same values and encode to the very bytes of the models' `to_json(exclude_none=True)`
(tests/unit/test_funnel_event_structs.py compares them over generated profiles and events).

How the bytes stay the same:
- fields in the models' order (every class is kw_only, so a required field may follow a defaulted one;
  subclasses' fields come after the envelope's, as pydantic's do);
- `omit_defaults` stands for `exclude_none`: every field whose default is None has that default, and no
  other field has a default (a model's non-None defaults are written out, so here they are required);
- msgspec writes Decimal as its str() in a string, datetimes and dates in ISO 8601 with `Z` for UTC, as
  pydantic does. They differ only on floats of 1e16 or more (msgspec `1e16`, pydantic `1e+16`): the one float
  here is a median of days between two datetimes, under 4e6.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from shared.funnel import Health, LoyaltyStage, SurveyLevel


class _Struct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Frozen like the models; no GC tracking: these hold no cycles, only values and other such Structs.
    msgspec takes `kw_only` per class (for the fields it declares), and mypy wants `frozen` said again too."""

    if TYPE_CHECKING:
        # What pydantic's BaseModel declares to mypy, and so what the readers of these events (the segmenter's
        # tests) had: an attribute of one member read through the union of events or payloads.
        def __getattr__(self, name: str) -> Any: ...


class ProductRef(_Struct, frozen=True, kw_only=True):
    product_id: str
    title: str | None = None
    category: str | None = None
    price: Decimal | None = None


class ProfileSnapshot(_Struct, frozen=True, kw_only=True):
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
    consent_at: datetime | None = None
    stage: LoyaltyStage
    health: Health
    orders_count: int
    total_spent: Decimal
    currency: str | None = None
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    survey_level: SurveyLevel
    birthday: date | None = None
    average_order_value: Decimal | None = None
    median_days_between_orders: float | None = None
    favourite_categories: tuple[str, ...]
    last_products: tuple[ProductRef, ...]
    viewed_products: tuple[ProductRef, ...]


class StageChanged(_Struct, frozen=True, kw_only=True):
    from_stage: LoyaltyStage
    to_stage: LoyaltyStage
    reason: str


class HealthChanged(_Struct, frozen=True, kw_only=True):
    from_health: Health
    to_health: Health
    reason: str


class CartItem(_Struct, frozen=True, kw_only=True):
    product_id: str
    title: str | None = None
    category: str | None = None
    quantity: int
    price: Decimal


class CartAbandoned(_Struct, frozen=True, kw_only=True):
    cart_id: str
    items: tuple[CartItem, ...]
    total: Decimal
    currency: str | None = None
    recovery_url: str | None = None
    last_activity_at: datetime
    source: str


class SurveyScored(_Struct, frozen=True, kw_only=True):
    survey_id: str
    level: SurveyLevel
    agreed: dict[str, int]
    csat: int | None = None
    ces: int | None = None
    nps: int | None = None


class OrderRecorded(_Struct, frozen=True, kw_only=True):
    order_id: str
    total: Decimal
    currency: str
    items: tuple[CartItem, ...]
    discount_codes: tuple[str, ...]
    cart_id: str | None = None


class CustomerUpdated(_Struct, frozen=True, kw_only=True):
    changed: tuple[str, ...]


class BirthdayDue(_Struct, frozen=True, kw_only=True):
    birthday: date
    days_before: int


class _Envelope(_Struct, frozen=True, kw_only=True):
    # The model's `type` default, for the builder to pass: a default here would be left out of the JSON.
    TYPE: ClassVar[str] = ""

    schema_version: int
    event_id: str
    store_id: str
    customer_id: str
    occurred_at: datetime
    caused_by: str
    profile: ProfileSnapshot
    type: str

    @property
    def partition_key(self) -> str:
        return f"{self.store_id}:{self.customer_id}"


class StageChangedEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "stage_changed"
    payload: StageChanged


class HealthChangedEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "health_changed"
    payload: HealthChanged


class CartAbandonedEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "cart_abandoned"
    payload: CartAbandoned


class SurveyScoredEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "survey_scored"
    payload: SurveyScored


class OrderPlacedFunnelEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "order_placed"
    payload: OrderRecorded


class CustomerUpdatedEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "customer_updated"
    payload: CustomerUpdated


class BirthdayDueEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "birthday_due"
    payload: BirthdayDue


class CustomerErasedFunnelEvent(_Envelope, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "customer_erased"
    if not TYPE_CHECKING:
        # The model has no payload. Always None here, which `omit_defaults` leaves out of the JSON (the same
        # bytes): every funnel event is then built by one call with its keywords (the segmenter's
        # `Decision.emit`). Declared at run time only, so that to the type checker this event has no
        # payload, as the model has none (a reader of another event's payload does not have to rule out None).
        payload: None = None


FunnelEvent = (
    StageChangedEvent
    | HealthChangedEvent
    | CartAbandonedEvent
    | SurveyScoredEvent
    | BirthdayDueEvent
    | OrderPlacedFunnelEvent
    | CustomerUpdatedEvent
    | CustomerErasedFunnelEvent
)
FunnelPayload = (
    StageChanged
    | HealthChanged
    | CartAbandoned
    | SurveyScored
    | OrderRecorded
    | CustomerUpdated
    | BirthdayDue
)

_ENCODER = msgspec.json.Encoder()


def encode_funnel_event(event: FunnelEvent) -> bytes:
    """The outbox's bytes of a funnel event: shared.funnel_events.encode_funnel_event's of its model."""
    return _ENCODER.encode(event)


# `encode_funnel_event`'s bytes written into a bytearray at an offset (-1: appended), as msgspec's
# `encode_into`: the segmenter's outbox writes a batch's events one after another (its adapters' unnest.py).
encode_funnel_event_into = _ENCODER.encode_into

"""Funnel events: the versioned contract on topic `funnel-events`, produced by the segmenter's outbox.

Each event carries the profile snapshot the notifier needs to personalise a message, so the notifier never
reads the segmenter's tables.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared.funnel import Health, LoyaltyStage

SCHEMA_VERSION: Literal[1] = 1
_NAMESPACE = uuid.UUID("6f1f7d2e-4a43-4b8e-9a55-0c7b3f1d2a10")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ProfileSnapshot(_Model):
    customer_id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    city: str | None = None
    country: str | None = None
    timezone: str | None = None
    accepts_marketing: bool | None = None
    stage: LoyaltyStage
    health: Health = Health.ACTIVE
    orders_count: int = 0
    total_spent: Decimal = Decimal("0")
    currency: str | None = None
    first_order_at: AwareDatetime | None = None
    last_order_at: AwareDatetime | None = None


class StageChanged(_Model):
    from_stage: LoyaltyStage
    to_stage: LoyaltyStage
    reason: str


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


class CustomerErasedFunnelEvent(_Envelope):
    type: Literal["customer_erased"] = "customer_erased"


FunnelEvent = Annotated[StageChangedEvent | CustomerErasedFunnelEvent, Field(discriminator="type")]

_ADAPTER: TypeAdapter[FunnelEvent] = TypeAdapter(FunnelEvent)


def funnel_event_id(caused_by: str, kind: str) -> str:
    """Deterministic id: replaying the same storefront event yields the same funnel event id."""
    return str(uuid.uuid5(_NAMESPACE, f"{caused_by}/{kind}"))


def encode_funnel_event(event: FunnelEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def decode_funnel_event(raw: bytes | str) -> FunnelEvent:
    return _ADAPTER.validate_json(raw)

"""A message's life and what the notifier knows when it sends one: typed, frozen records.

The repository hands these to the sender and the API instead of database rows, so a misspelled column or
status in the code that decides whether a customer gets a message twice or never is a type error.

Life of a message: `pending` (possibly delayed or deferred) -> `sending` (claimed, coupon issued) -> `sent`
or `failed`; or `skipped` with a reason, at planning or at send time. A message whose coupon must exist in
the store's platform goes `pending` -> `provisioning` -> `sending` once the platform confirmed it (or back to
`pending` later, or `skipped` as `coupon_unavailable`). A `sending` row left behind by a crash is settled once
its claim's lease has run out (domain/delivery.py): back to `pending` if it was never started, or, if it may
have been on an SMTP connection, sent once more (transactional, same Message-ID) or `skipped` as `uncertain`
(marketing). A retryable failure puts the message back to `pending` with a later due time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.funnel import Health, LoyaltyStage
from shared.funnel_events import (
    BirthdayDue,
    CartAbandoned,
    CustomerUpdated,
    FunnelEvent,
    HealthChanged,
    OrderRecorded,
    StageChanged,
    SurveyScored,
)
from shared.notifier_rules import CouponKind


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    # Claimed, its coupon being created in the store's platform; nothing sent yet, so a crash here is
    # retried after a lease (the platform is asked first whether the coupon already exists).
    PROVISIONING = "provisioning"


# Statuses of a message that has been (or is being) handed over: what the frequency cap counts.
CLAIMED = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.PROVISIONING)
# Statuses the per-flow report shows as waiting.
WAITING = (MessageStatus.PENDING, MessageStatus.SENDING, MessageStatus.PROVISIONING)

# The payload of the funnel event that triggered a message, kept with it for rendering at send time.
Trigger = (
    StageChanged
    | HealthChanged
    | CartAbandoned
    | SurveyScored
    | OrderRecorded
    | BirthdayDue
    | CustomerUpdated
)

_TRIGGER_MODELS: dict[str, type[BaseModel]] = {
    "stage_changed": StageChanged,
    "health_changed": HealthChanged,
    "cart_abandoned": CartAbandoned,
    "survey_scored": SurveyScored,
    "order_placed": OrderRecorded,
    "birthday_due": BirthdayDue,
    "customer_updated": CustomerUpdated,
}


def encode_trigger(event: FunnelEvent) -> dict[str, Any]:
    """The stored form: the event's type and its payload's fields (JSON types)."""
    payload = getattr(event, "payload", None)
    fields = payload.model_dump(mode="json", exclude_none=True) if payload is not None else {}
    return {"type": event.type, **fields}


def decode_trigger(stored: Mapping[str, Any]) -> Trigger | None:
    """The stored trigger back as its funnel-event payload; None when there is none (a skipped message, an
    erasure) or it no longer fits the model (a row written by an older version), which renders without it."""
    model = _TRIGGER_MODELS.get(str(stored.get("type")))
    if model is None:
        return None
    try:
        decoded = model.model_validate({k: v for k, v in stored.items() if k != "type"})
    except ValidationError:
        return None
    assert isinstance(decoded, Trigger)  # the mapping above holds only Trigger models
    return decoded


def trigger_fields(trigger: Trigger | None) -> dict[str, Any]:
    """What templates and recommendations read of a trigger: its fields as JSON types."""
    return trigger.model_dump(mode="json", exclude_none=True) if trigger is not None else {}


def trigger_currency(trigger: Trigger | None) -> str | None:
    return trigger.currency if isinstance(trigger, OrderRecorded | CartAbandoned) else None


@dataclass(frozen=True, slots=True)
class Message:
    """One row of `messages`: a planned message, whatever became of it."""

    id: int
    store_id: str
    customer_id: str
    flow: str
    trigger_event_id: str
    channel: str
    status: MessageStatus
    skip_reason: str | None
    to_address: str | None
    trigger: Trigger | None
    subject: str | None
    due_at: datetime
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    marketing: bool
    trigger_at: datetime | None
    send_before: datetime | None
    claimed_at: datetime | None
    coupon_code: str | None
    converted_at: datetime | None
    converted_order_id: str | None
    revenue: Decimal | None
    resent_at: datetime | None = None  # a copy of unknown fate was sent again (same Message-ID)


@dataclass(frozen=True, slots=True)
class KnownCustomer:
    """The latest the notifier knows of a customer (from funnel events), plus what only it knows."""

    store_id: str
    customer_id: str
    email: str | None
    phone: str | None
    accepts_marketing: bool | None
    stage: LoyaltyStage
    health: Health
    profile: Mapping[str, Any]
    last_order_at: datetime | None
    last_cart_abandoned_at: datetime | None
    unsubscribe_token: str | None
    unsubscribed_at: datetime | None
    suppressed_at: datetime | None
    suppressed_reason: str | None


@dataclass(frozen=True, slots=True)
class IssuedCoupon:
    """One row of `coupons`."""

    id: int
    store_id: str
    customer_id: str
    flow: str
    trigger_event_id: str
    message_id: int | None
    code: str
    kind: CouponKind
    value: Decimal
    currency: str | None
    issued_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    redeemed_order_id: str | None
    redeemed_by: str | None


@dataclass(frozen=True, slots=True)
class FlowCount:
    """Messages of one flow, status and skip reason, with their conversions."""

    flow: str
    status: MessageStatus
    skip_reason: str | None
    n: int
    converted: int
    revenue: Decimal
    resent: int = 0  # of which a copy of unknown fate was sent again


@dataclass(frozen=True, slots=True)
class CouponCount:
    flow: str
    issued: int
    redeemed: int

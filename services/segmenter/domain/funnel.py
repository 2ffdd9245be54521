"""Where a customer stands in the loyalty funnel: pure decisions from (profile, event).

`decide` returns the new profile plus what happened (transitions and funnel events); it never writes or
sends anything, so every rule is tested in milliseconds and a replay of the same events gives the same state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from services.segmenter.domain.profile import Profile, Transition
from shared.events import Customer, OrderPlacedEvent, StorefrontEvent
from shared.funnel import LoyaltyStage
from shared.funnel_events import FunnelEvent, StageChanged, StageChangedEvent, funnel_event_id

# How many orders each order-driven stage needs. Issue #4 moves these into the per-store YAML rules.
FIRST_TIME_AT_ORDERS = 1
REPEAT_AT_ORDERS = 2


@dataclass(frozen=True)
class Decision:
    profile: Profile
    transitions: tuple[Transition, ...] = ()
    funnel_events: tuple[FunnelEvent, ...] = ()


def stage_for_orders(orders_count: int) -> LoyaltyStage:
    if orders_count >= REPEAT_AT_ORDERS:
        return LoyaltyStage.REPEAT
    if orders_count >= FIRST_TIME_AT_ORDERS:
        return LoyaltyStage.FIRST_TIME
    return LoyaltyStage.PROSPECT


def _with_customer_fields(profile: Profile, customer: Customer) -> Profile:
    """Newer non-empty facts win; a source that omits a field does not erase what we knew."""
    updates = {
        name: value
        for name in (
            "email",
            "first_name",
            "last_name",
            "phone",
            "locale",
            "city",
            "country",
            "timezone",
            "accepts_marketing",
        )
        if (value := getattr(customer, name)) is not None
    }
    return dataclasses.replace(profile, **updates) if updates else profile


def _with_order(profile: Profile, event: OrderPlacedEvent) -> Profile:
    order = event.payload
    if order.order_id in profile.order_ids:
        # The same order delivered under another event id (e.g. orders/create retried by a new delivery).
        return profile
    at = event.occurred_at
    return dataclasses.replace(
        profile,
        orders_count=profile.orders_count + 1,
        total_spent=profile.total_spent + order.total,
        currency=profile.currency or order.currency,
        first_order_at=min(profile.first_order_at, at) if profile.first_order_at else at,
        last_order_at=max(profile.last_order_at, at) if profile.last_order_at else at,
        order_ids=(*profile.order_ids, order.order_id),
    )


def decide(profile: Profile | None, event: StorefrontEvent) -> Decision:
    current = profile or Profile(store_id=event.store_id, customer_id=event.customer.key)
    updated = _with_customer_fields(current, event.customer)
    if isinstance(event, OrderPlacedEvent):
        updated = _with_order(updated, event)

    target = stage_for_orders(updated.orders_count)
    # Orders only ever move a customer up; corrections down (refunds, erasure) are separate decisions.
    if target.rank <= updated.stage.rank:
        return Decision(profile=updated)

    reason = f"{updated.orders_count} order{'s' if updated.orders_count != 1 else ''}"
    transition = Transition(
        from_stage=updated.stage,
        to_stage=target,
        reason=reason,
        occurred_at=event.occurred_at,
        event_id=event.event_id,
    )
    moved = dataclasses.replace(updated, stage=target)
    funnel_event = StageChangedEvent(
        event_id=funnel_event_id(event.event_id, "stage_changed"),
        store_id=moved.store_id,
        customer_id=moved.customer_id,
        occurred_at=event.occurred_at,
        caused_by=event.event_id,
        profile=moved.snapshot(),
        payload=StageChanged(from_stage=transition.from_stage, to_stage=target, reason=reason),
    )
    return Decision(profile=moved, transitions=(transition,), funnel_events=(funnel_event,))

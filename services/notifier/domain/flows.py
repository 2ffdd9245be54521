"""Which messages a funnel event calls for: a pure function of (event, the store's rules, now).

Each flow has a trigger (below), is enabled, delayed, capped and couponed per store (shared/notifier_rules).
A trigger older than the flow's max age is history being replayed: it is recorded as skipped, never sent.
Guards that depend on the moment of sending (consent, exits, caps, quiet hours) are checked again right
before each send, in guards.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.notifier.domain.messages import encode_trigger
from shared.funnel import Health, LoyaltyStage
from shared.funnel_events import (
    BirthdayDueEvent,
    CartAbandonedEvent,
    FunnelEvent,
    HealthChangedEvent,
    OrderPlacedFunnelEvent,
    ProfileSnapshot,
    StageChangedEvent,
    SurveyScoredEvent,
)
from shared.notifier_rules import Channel, FlowName, FlowRule, NotifierRules

# Reaching a stage unlocks that stage's own message (docs/domain.md, "Stages": reaching a new stage).
STAGE_FLOWS: dict[LoyaltyStage, FlowName] = {
    LoyaltyStage.FIRST_TIME: FlowName.WELCOME,
    LoyaltyStage.REPEAT: FlowName.REPEAT_MILESTONE,
    LoyaltyStage.LOYAL: FlowName.VIP,
    LoyaltyStage.ADVOCATE: FlowName.REFERRAL,
}


@dataclass(frozen=True)
class PlannedMessage:
    """A message to send once: the dedupe key is (store, customer, flow, trigger event)."""

    store_id: str
    customer_id: str
    flow: FlowName
    trigger_event_id: str
    trigger_at: datetime
    due_at: datetime
    send_before: datetime
    marketing: bool
    channel: str
    to_address: str | None
    # What the trigger said (cart items, order, survey...), kept for rendering at send time (messages.py
    # encodes it and decodes it back).
    trigger: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    store_id: str
    customer_id: str
    flow: FlowName
    trigger_event_id: str
    reason: str


SUPPORT_CHANNEL = "support"

# Flows whose templates show recommendations; the others skip the segmenter round trip (welcome is sent the
# moment a first order lands, and should not wait for it).
RECOMMENDING_FLOWS = frozenset(
    {
        FlowName.ABANDONED_CART,  # what else they looked at, besides what they left in the cart
        FlowName.FOLLOW_UP,
        FlowName.REPEAT_MILESTONE,
        FlowName.WIN_BACK,
        FlowName.BIRTHDAY,
    }
)


def triggered_flows(event: FunnelEvent, rules: NotifierRules) -> list[FlowName]:
    if isinstance(event, StageChangedEvent):
        moved_up = event.payload.to_stage.rank > event.payload.from_stage.rank
        flow = STAGE_FLOWS.get(event.payload.to_stage)
        return [flow] if moved_up and flow else []
    if isinstance(event, CartAbandonedEvent):
        return [FlowName.ABANDONED_CART]
    if isinstance(event, OrderPlacedFunnelEvent):
        return [FlowName.REVIEW_REQUEST, FlowName.FOLLOW_UP]
    if isinstance(event, HealthChangedEvent):
        return [FlowName.WIN_BACK] if event.payload.to_health == Health.AT_RISK else []
    if isinstance(event, BirthdayDueEvent):
        return [FlowName.BIRTHDAY]
    if isinstance(event, SurveyScoredEvent):
        csat = event.payload.csat
        low = csat is not None and csat <= rules.low_csat_at_most
        return [FlowName.SURVEY_THANKS, *([FlowName.SUPPORT_ALERT] if low else [])]
    return []


def plan(event: FunnelEvent, rules: NotifierRules, now: datetime) -> list[PlannedMessage | Skipped]:
    planned: list[PlannedMessage | Skipped] = []
    for name in triggered_flows(event, rules):
        rule = rules.flow(name)
        if rule.enabled:
            planned.append(_plan_one(event, name, rule, rules, now))
    return planned


def _plan_one(
    event: FunnelEvent, name: FlowName, rule: FlowRule, rules: NotifierRules, now: datetime
) -> PlannedMessage | Skipped:
    def skipped(reason: str) -> Skipped:
        return Skipped(event.store_id, event.customer_id, name, event.event_id, reason)

    if now - event.occurred_at > rule.max_age:
        return skipped("trigger_too_old")
    channel, address = _channel_and_address(name, rule, rules, event.profile)
    if address is None:
        return skipped(f"no_{'email' if channel == Channel.EMAIL else 'recipient'}")
    if not rule.transactional and event.profile.accepts_marketing is not True:
        return skipped("no_marketing_consent")
    due_at = now + rule.delay
    return PlannedMessage(
        store_id=event.store_id,
        customer_id=event.customer_id,
        flow=name,
        trigger_event_id=event.event_id,
        trigger_at=event.occurred_at,
        due_at=due_at,
        send_before=due_at + rule.send_within,
        marketing=not rule.transactional,
        channel=channel,
        to_address=address,
        trigger=encode_trigger(event),
    )


def _channel_and_address(
    name: FlowName, rule: FlowRule, rules: NotifierRules, profile: ProfileSnapshot
) -> tuple[str, str | None]:
    if name == FlowName.SUPPORT_ALERT:
        # The store's support team is the recipient; the webhook's absence is a skip reason the store sees.
        hook = rules.support_webhook
        return SUPPORT_CHANNEL, str(hook.url) if hook else None
    if rule.channel == Channel.WEBHOOK:
        return Channel.WEBHOOK.value, profile.phone if rules.messaging_webhook else None
    return Channel.EMAIL.value, profile.email

"""Which messages a funnel event calls for: a pure function of (event, now).

A flow names its trigger, whether it is transactional (sent whatever the marketing consent), and how old a
trigger may be: a backfill of history replays old funnel events, and must never email anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.funnel import LoyaltyStage
from shared.funnel_events import FunnelEvent, ProfileSnapshot, StageChangedEvent


@dataclass(frozen=True)
class Flow:
    name: str
    transactional: bool
    max_trigger_age: timedelta


WELCOME = Flow(name="welcome", transactional=True, max_trigger_age=timedelta(days=2))


@dataclass(frozen=True)
class PlannedMessage:
    """A message to send once: the dedupe key is (store, customer, flow, trigger event)."""

    store_id: str
    customer_id: str
    flow: Flow
    trigger_event_id: str
    profile: ProfileSnapshot


@dataclass(frozen=True)
class Skipped:
    store_id: str
    customer_id: str
    flow: Flow
    trigger_event_id: str
    reason: str


def plan(event: FunnelEvent, now: datetime) -> list[PlannedMessage | Skipped]:
    if isinstance(event, StageChangedEvent) and event.payload.to_stage == LoyaltyStage.FIRST_TIME:
        return [_planned_or_skipped(event, WELCOME, now)]
    return []


def _planned_or_skipped(event: StageChangedEvent, flow: Flow, now: datetime) -> PlannedMessage | Skipped:
    ids = (event.store_id, event.customer_id, flow)
    if now - event.occurred_at > flow.max_trigger_age:
        return Skipped(*ids, event.event_id, "trigger_too_old")
    if not event.profile.email:
        return Skipped(*ids, event.event_id, "no_email")
    if not flow.transactional and event.profile.accepts_marketing is not True:
        return Skipped(*ids, event.event_id, "no_marketing_consent")
    return PlannedMessage(*ids, event.event_id, event.profile)

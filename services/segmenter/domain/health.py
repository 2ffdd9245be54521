"""Health: how recently a customer ordered, against their own rhythm. Pure; `at` is always passed in."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.segmenter.domain.profile import Profile
from shared.funnel import Health
from shared.funnel_rules import HealthRule


def at_risk_after(profile: Profile, rule: HealthRule) -> timedelta:
    """The larger of the store default and the customer's own rhythm (a multiple of their median gap)."""
    return thresholds(profile.median_days_between_orders, rule)[0]


def lapsed_after(profile: Profile, rule: HealthRule) -> timedelta:
    return thresholds(profile.median_days_between_orders, rule)[1]


def thresholds(median_days: float | None, rule: HealthRule) -> tuple[timedelta, timedelta]:
    """(at risk after, lapsed after) for a customer whose median gap between orders is `median_days`."""
    own = (
        timedelta(days=median_days * rule.own_rhythm_multiplier) if median_days is not None else timedelta(0)
    )
    at_risk = max(rule.at_risk_after, own)
    # Lapse scales with the customer's rhythm too, keeping the store's ratio between the two thresholds,
    # so a customer who orders twice a year is not called lapsed before they are even at risk.
    ratio = rule.lapsed_after / rule.at_risk_after
    return at_risk, max(rule.lapsed_after, at_risk * ratio)


def health_at(profile: Profile, rule: HealthRule, at: datetime) -> Health:
    last = profile.last_order_at
    if last is None:
        return Health.ACTIVE
    quiet = at - last
    if quiet >= lapsed_after(profile, rule):
        return Health.LAPSED
    if quiet >= at_risk_after(profile, rule):
        return Health.AT_RISK
    return Health.ACTIVE


def next_check(profile: Profile, rule: HealthRule) -> datetime | None:
    """When health would next change if nothing happens: the due time of the customer's health timer."""
    last = profile.last_order_at
    if last is None or profile.erased:
        return None
    if profile.health == Health.ACTIVE:
        return last + at_risk_after(profile, rule)
    if profile.health == Health.AT_RISK:
        return last + lapsed_after(profile, rule)
    return None

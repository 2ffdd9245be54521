"""Health: how recently a customer ordered, against their own rhythm. Pure; `at` is always passed in."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.segmenter.domain.profile import Profile
from shared.clock import LONGEST_SPAN
from shared.funnel import Health
from shared.funnel_rules import HealthRule


def at_risk_after(profile: Profile, rule: HealthRule) -> timedelta:
    """The larger of the store default and the customer's own rhythm (a multiple of their median gap)."""
    return thresholds(profile.median_days_between_orders, rule)[0]


def lapsed_after(profile: Profile, rule: HealthRule) -> timedelta:
    return thresholds(profile.median_days_between_orders, rule)[1]


# No rhythm makes health wait longer than this: neither a customer whose orders lie decades apart (their
# median gap times the store's multiplier) nor a store whose lapse is thousands of times its at-risk delay
# (the lapse keeps the store's ratio). Without a cap, the dates these give (the last order plus the wait)
# could fall after year 9999, which no datetime holds.
LONGEST_WAIT = LONGEST_SPAN


def thresholds(median_days: float | None, rule: HealthRule) -> tuple[timedelta, timedelta]:
    """(at risk after, lapsed after) for a customer whose median gap between orders is `median_days`, each at
    most LONGEST_WAIT."""
    try:
        own = (
            timedelta(days=median_days * rule.own_rhythm_multiplier)
            if median_days is not None
            else timedelta(0)
        )
    except OverflowError:  # beyond timedelta's own range (999,999,999 days)
        own = LONGEST_WAIT
    at_risk = min(max(rule.at_risk_after, own), LONGEST_WAIT)
    # Lapse scales with the customer's rhythm too, keeping the store's ratio between the two thresholds,
    # so a customer who orders twice a year is not called lapsed before they are even at risk.
    ratio = rule.lapsed_after / rule.at_risk_after
    try:
        lapse = max(rule.lapsed_after, at_risk * ratio)
    except OverflowError:
        lapse = LONGEST_WAIT
    return at_risk, min(lapse, LONGEST_WAIT)


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

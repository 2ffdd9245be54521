"""Which funnel stage a customer's facts earn, under a store's rules. Pure.

A function of the facts alone (counted orders, the highest survey level answered, referrals), never of
when an event happens to be handled: a late, older order counts exactly as if it had come in time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from services.segmenter.domain.profile import Profile
from services.segmenter.domain.vocabulary import (
    ADVOCATE,
    FIRST_TIME,
    LEVEL_RANK,
    LOYAL,
    PROSPECT,
    REPEAT,
    STAGE_RANK,
    VALUE,
)
from shared.funnel import LoyaltyStage, SurveyLevel
from shared.funnel_rules import FunnelRules


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _most_within(placed: list[datetime], within: timedelta) -> int:
    """The most orders in any window of length `within` (an order exactly `within` before another is out)."""
    best, start = 0, 0
    for end, t in enumerate(placed):
        while t - placed[start] >= within:
            start += 1
        best = max(best, end - start + 1)
    return best


class _Ladder:
    """A store's stage rules as `earned` reads them, taken once from each FunnelRules (frozen). A pydantic
    model's attribute cost compiled code about 350 instructions a read (its class's `__getattr__` hook sends
    every read down CPython's slower path), and `earned` read ten for each dated fact of each derivation;
    the attributes of this compiled class are read in a few instructions."""

    def __init__(self, rules: FunnelRules) -> None:
        loyal, advocate = rules.loyal, rules.advocate
        self.rules = rules  # held, so that its id, the memo's key, cannot be another's meanwhile
        self.first_time_orders: int = rules.first_time_orders
        self.repeat_orders: int = rules.repeat_orders
        self.loyal_orders: int = loyal.orders
        self.loyal_within: timedelta = loyal.within
        self.loyal_orders_with_survey: int = loyal.orders_with_survey
        self.loyal_survey_rank: int = LEVEL_RANK[loyal.survey_level]
        self.advocate_min_rank: int = STAGE_RANK[advocate.min_stage]
        self.advocate_survey_rank: int = LEVEL_RANK[advocate.survey_level]
        self.referral_counts: bool = advocate.referral_counts


# By the rules' id: nearly always the same few (the default rules, a store's own); emptied when full.
_LADDERS_SIZE: Final = 256
_ladders: Final[dict[int, _Ladder]] = {}


def _ladder(rules: FunnelRules) -> _Ladder:
    held = _ladders.get(id(rules))
    if held is None or held.rules is not rules:
        if len(_ladders) >= _LADDERS_SIZE:
            _ladders.clear()
        held = _ladders[id(rules)] = _Ladder(rules)
    return held


def earned(
    placed: list[datetime], level: SurveyLevel, referrals: int, rules: FunnelRules
) -> tuple[LoyaltyStage, str]:
    """The highest stage these facts earn: counted orders (sorted times), the highest survey level answered
    and the referrals made."""
    ladder = _ladder(rules)
    orders = len(placed)
    stage, reason = PROSPECT, "no orders yet"
    if orders >= ladder.first_time_orders:
        stage, reason = FIRST_TIME, _plural(orders, "order")
    if orders >= ladder.repeat_orders:
        stage, reason = REPEAT, _plural(orders, "order")
    level_rank = LEVEL_RANK[level]
    most = _most_within(placed, ladder.loyal_within) if orders >= ladder.loyal_orders else 0
    if most >= ladder.loyal_orders:
        stage, reason = LOYAL, f"{_plural(most, 'order')} within {ladder.loyal_within.days} days"
    elif orders >= ladder.loyal_orders_with_survey and level_rank >= ladder.loyal_survey_rank:
        stage, reason = (
            LOYAL,
            f"{_plural(orders, 'order')} and a {VALUE[level]} survey answer",
        )
    if STAGE_RANK[stage] >= ladder.advocate_min_rank:
        if level_rank >= ladder.advocate_survey_rank:
            stage, reason = ADVOCATE, f"{VALUE[level]}-level survey answer"
        elif ladder.referral_counts and referrals > 0:
            stage, reason = ADVOCATE, _plural(referrals, "referral")
    return stage, reason


def earned_stage(profile: Profile, rules: FunnelRules) -> tuple[LoyaltyStage, str]:
    """The highest stage a profile's facts earn now, and why."""
    placed = [o.placed_at for o in profile.counted_orders]
    levels = [level for _, _, level in profile.survey_levels]
    level = max(levels, key=lambda s: s.rank) if levels else profile.survey_level
    return earned(placed, level, len(profile.referred) or profile.referrals, rules)

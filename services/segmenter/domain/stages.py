"""Which funnel stage a customer's facts earn, under a store's rules. Pure.

A function of the facts alone (counted orders, the highest survey level answered, referrals), never of
when an event happens to be handled: a late, older order counts exactly as if it had come in time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.segmenter.domain.profile import Profile
from shared.funnel import LEVEL_RANK, STAGE_RANK, VALUE, LoyaltyStage, SurveyLevel
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


def earned(
    placed: list[datetime], level: SurveyLevel, referrals: int, rules: FunnelRules
) -> tuple[LoyaltyStage, str]:
    """The highest stage these facts earn: counted orders (sorted times), the highest survey level answered
    and the referrals made."""
    orders = len(placed)
    stage, reason = LoyaltyStage.PROSPECT, "no orders yet"
    if orders >= rules.first_time_orders:
        stage, reason = LoyaltyStage.FIRST_TIME, _plural(orders, "order")
    if orders >= rules.repeat_orders:
        stage, reason = LoyaltyStage.REPEAT, _plural(orders, "order")
    loyal = rules.loyal
    level_rank = LEVEL_RANK[level]
    most = _most_within(placed, loyal.within) if orders >= loyal.orders else 0
    if most >= loyal.orders:
        stage, reason = LoyaltyStage.LOYAL, f"{_plural(most, 'order')} within {loyal.within.days} days"
    elif orders >= loyal.orders_with_survey and level_rank >= LEVEL_RANK[loyal.survey_level]:
        stage, reason = (
            LoyaltyStage.LOYAL,
            f"{_plural(orders, 'order')} and a {VALUE[level]} survey answer",
        )
    advocate = rules.advocate
    if STAGE_RANK[stage] >= STAGE_RANK[advocate.min_stage]:
        if level_rank >= LEVEL_RANK[advocate.survey_level]:
            stage, reason = LoyaltyStage.ADVOCATE, f"{VALUE[level]}-level survey answer"
        elif advocate.referral_counts and referrals > 0:
            stage, reason = LoyaltyStage.ADVOCATE, _plural(referrals, "referral")
    return stage, reason


def earned_stage(profile: Profile, rules: FunnelRules) -> tuple[LoyaltyStage, str]:
    """The highest stage a profile's facts earn now, and why."""
    placed = [o.placed_at for o in profile.counted_orders]
    levels = [level for _, _, level in profile.survey_levels]
    level = max(levels, key=lambda s: s.rank) if levels else profile.survey_level
    return earned(placed, level, len(profile.referred) or profile.referrals, rules)

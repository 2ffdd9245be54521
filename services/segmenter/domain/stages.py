"""Which funnel stage a customer's facts earn, under a store's rules. Pure."""

from __future__ import annotations

from datetime import datetime

from services.segmenter.domain.profile import Profile
from shared.funnel import LoyaltyStage
from shared.funnel_rules import FunnelRules


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def earned_stage(profile: Profile, rules: FunnelRules, at: datetime) -> tuple[LoyaltyStage, str]:
    """The highest stage the facts support at `at` (event time), and why."""
    orders = profile.orders_count
    level = profile.survey_level
    stage, reason = LoyaltyStage.PROSPECT, "no orders yet"
    if orders >= rules.first_time_orders:
        stage, reason = LoyaltyStage.FIRST_TIME, _plural(orders, "order")
    if orders >= rules.repeat_orders:
        stage, reason = LoyaltyStage.REPEAT, _plural(orders, "order")
    loyal = rules.loyal
    recent = sum(1 for o in profile.counted_orders if at - loyal.within < o.placed_at <= at)
    if recent >= loyal.orders:
        stage, reason = LoyaltyStage.LOYAL, f"{_plural(recent, 'order')} within {loyal.within.days} days"
    elif orders >= loyal.orders_with_survey and level.rank >= loyal.survey_level.rank:
        stage, reason = LoyaltyStage.LOYAL, f"{_plural(orders, 'order')} and a {level.value} survey answer"
    advocate = rules.advocate
    if max(stage.rank, profile.stage.rank) >= advocate.min_stage.rank:
        if level.rank >= advocate.survey_level.rank:
            stage, reason = LoyaltyStage.ADVOCATE, f"{level.value}-level survey answer"
        elif advocate.referral_counts and profile.referrals > 0:
            stage, reason = LoyaltyStage.ADVOCATE, _plural(profile.referrals, "referral")
    return stage, reason

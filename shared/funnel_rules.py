"""Per-store funnel rules, read from the store registry (`funnel:` of a store) and validated at start-up.

Defaults are the product's recommendations (docs/domain.md, "Stages" and "Health"): first_time at 1
order, repeat at 2, loyal at 3 orders within 365 days or 2 orders with a conative-or-higher survey answer,
advocate for a repeat customer with an action-level answer or a referral; at risk after max(90 days, 2 x the
customer's own median interval), lapsed after 180 days.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.clock import LONGEST_SPAN
from shared.events import SurveyScale
from shared.funnel import LoyaltyStage, SurveyLevel

Count = Annotated[int, Field(ge=1, le=1000)]

# The three-part loyalty survey (and the optional cognitive part), statement id -> scale: docs/domain.md,
# "Three ways to measure loyalty".
DEFAULT_STATEMENTS: dict[str, SurveyScale] = {
    "affective.really_like": SurveyScale.AFFECTIVE,
    "affective.happy_to_buy": SurveyScale.AFFECTIVE,
    "affective.like_more": SurveyScale.AFFECTIVE,
    "affective.more_attached": SurveyScale.AFFECTIVE,
    "affective.more_interested": SurveyScale.AFFECTIVE,
    "conative.buy_again": SurveyScale.CONATIVE,
    "conative.buy_other_products": SurveyScale.CONATIVE,
    "action.recommend": SurveyScale.ACTION,
    "action.say_positive": SurveyScale.ACTION,
    "action.first_choice": SurveyScale.ACTION,
    "cognitive.better_value": SurveyScale.COGNITIVE,
    "cognitive.better_quality": SurveyScale.COGNITIVE,
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# A store rule's duration, from nothing to a century: longer is a slip of the pen, and the dates the services
# derive from an event's time with it (a reminder, a coupon's end, a window back) must stay within what a
# datetime holds. A store whose registry says more is refused at load, naming the field.
RuleDuration = Annotated[timedelta, Field(ge=timedelta(0), le=LONGEST_SPAN)]
# A delay health divides by (the lapse keeps the store's ratio to it), or a window: more than nothing.
PositiveDuration = Annotated[timedelta, Field(gt=timedelta(0), le=LONGEST_SPAN)]


class LoyalRule(_Model):
    orders: Count = 3
    within: RuleDuration = timedelta(days=365)
    orders_with_survey: Count = 2
    survey_level: SurveyLevel = SurveyLevel.CONATIVE


class AdvocateRule(_Model):
    min_stage: LoyaltyStage = LoyaltyStage.REPEAT
    survey_level: SurveyLevel = SurveyLevel.ACTION
    referral_counts: bool = True


class HealthRule(_Model):
    at_risk_after: PositiveDuration = timedelta(days=90)
    own_rhythm_multiplier: float = Field(default=2.0, ge=1.0, le=20.0)
    lapsed_after: RuleDuration = timedelta(days=180)


class SurveyRule(_Model):
    statements: dict[str, SurveyScale] = Field(default_factory=lambda: dict(DEFAULT_STATEMENTS))
    # Cognitive loyalty tested inconclusively in the sources: supported, weighted zero by default.
    weights: dict[SurveyScale, float] = Field(
        default_factory=lambda: {
            SurveyScale.AFFECTIVE: 1.0,
            SurveyScale.CONATIVE: 1.0,
            SurveyScale.ACTION: 1.0,
            SurveyScale.COGNITIVE: 0.0,
        }
    )
    # A 1-5 score at or above this counts as agreeing with the statement.
    agree_at_score: Annotated[int, Field(ge=1, le=5)] = 4


class FunnelRules(_Model):
    first_time_orders: Count = 1
    repeat_orders: Count = 2
    loyal: LoyalRule = LoyalRule()
    advocate: AdvocateRule = AdvocateRule()
    health: HealthRule = HealthRule()
    survey: SurveyRule = SurveyRule()
    cart_abandonment: RuleDuration = timedelta(hours=1)
    birthday_days_before: Annotated[int, Field(ge=0, le=60)] = 7
    # Custom events (Segment track names) that record a successful referral by this customer.
    referral_events: tuple[str, ...] = ("Referral Completed", "Friend Referred")
    # Retention: a customer counts at a date when their last order is within this window.
    active_window: RuleDuration = timedelta(days=365)

    @model_validator(mode="after")
    def _ladder_climbs(self) -> FunnelRules:
        if not self.first_time_orders < self.repeat_orders <= self.loyal.orders:
            raise ValueError("order thresholds must climb: first_time_orders < repeat_orders <= loyal.orders")
        if self.health.at_risk_after >= self.health.lapsed_after:
            raise ValueError("health.at_risk_after must be shorter than health.lapsed_after")
        return self

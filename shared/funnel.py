"""Vocabulary of the loyalty funnel, shared by the segmenter (which decides) and the notifier (which acts)."""

from __future__ import annotations

from enum import StrEnum


class LoyaltyStage(StrEnum):
    PROSPECT = "prospect"
    FIRST_TIME = "first_time"
    REPEAT = "repeat"
    LOYAL = "loyal"
    ADVOCATE = "advocate"

    @property
    def rank(self) -> int:
        return _STAGE_ORDER.index(self)


_STAGE_ORDER = list(LoyaltyStage)


class Health(StrEnum):
    ACTIVE = "active"
    AT_RISK = "at_risk"
    LAPSED = "lapsed"


class SurveyLevel(StrEnum):
    """How far up the loyalty scales a customer's survey answers go: affective < conative < action."""

    NONE = "none"
    AFFECTIVE = "affective"
    CONATIVE = "conative"
    ACTION = "action"

    @property
    def rank(self) -> int:
        return _LEVEL_ORDER.index(self)


_LEVEL_ORDER = list(SurveyLevel)

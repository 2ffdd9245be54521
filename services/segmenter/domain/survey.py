"""Scoring a loyalty survey: which scales the customer agrees with, and so how loyal they say they are."""

from __future__ import annotations

from collections import Counter

from shared.events import SurveyScale
from shared.funnel import SurveyLevel
from shared.funnel_rules import SurveyRule
from shared.storefront_event_structs import SurveyAnswer

# The scales climb; cognitive has no level of its own (weighted zero by default, and not a rung).
_LEVEL_OF = {
    SurveyScale.AFFECTIVE: SurveyLevel.AFFECTIVE,
    SurveyScale.CONATIVE: SurveyLevel.CONATIVE,
    SurveyScale.ACTION: SurveyLevel.ACTION,
}


def agrees(answer: SurveyAnswer, rule: SurveyRule) -> bool:
    if answer.agree is not None:
        return answer.agree
    return answer.score is not None and answer.score >= rule.agree_at_score


def score(answers: tuple[SurveyAnswer, ...], rule: SurveyRule) -> tuple[SurveyLevel, dict[str, int]]:
    """The highest scale agreed with (weights above zero only), and how many statements per scale."""
    agreed: Counter[str] = Counter()
    level = SurveyLevel.NONE
    for answer in answers:
        scale = answer.scale or rule.statements.get(answer.statement_id)
        if scale is None or not agrees(answer, rule) or rule.weights.get(scale, 1.0) <= 0:
            continue
        agreed[scale.value] += 1
        rung = _LEVEL_OF.get(scale)
        if rung is not None and rung.rank > level.rank:
            level = rung
    return level, dict(sorted(agreed.items()))

"""Health's thresholds stay within what a date can be given: a customer whose orders lie decades apart, or a
store whose lapse is many thousand times its at-risk delay, waits at most LONGEST_WAIT (a century), so that
the last order plus the wait is a datetime even for an order dated up to shared.clock's LATEST_TIME."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.segmenter.domain.health import LONGEST_WAIT, thresholds
from services.segmenter.domain.history import _health_moves
from shared.clock import LATEST_TIME
from shared.funnel_rules import FunnelRules, HealthRule

DEFAULT = HealthRule()
EXTREME = HealthRule(
    at_risk_after=timedelta(seconds=1), own_rhythm_multiplier=20.0, lapsed_after=timedelta(days=36_000)
)


def test_an_ordinary_rhythm_keeps_its_thresholds() -> None:
    assert thresholds(None, DEFAULT) == (timedelta(days=90), timedelta(days=180))
    assert thresholds(100.0, DEFAULT) == (timedelta(days=200), timedelta(days=400))
    own = HealthRule(
        at_risk_after=timedelta(days=30), own_rhythm_multiplier=3.0, lapsed_after=timedelta(days=90)
    )
    assert thresholds(20.0, own) == (timedelta(days=60), timedelta(days=180))


@pytest.mark.parametrize(
    ("median_days", "rule"),
    [
        (20_000.0, DEFAULT),  # orders 55 years apart: 160 years to lapse
        (3e8, DEFAULT),  # beyond timedelta's own range once multiplied
        (100.0, EXTREME),  # the lapse keeps a ratio of 3.1 billion
    ],
)
def test_no_threshold_waits_longer_than_a_century(median_days: float, rule: HealthRule) -> None:
    at_risk, lapse = thresholds(median_days, rule)
    assert at_risk <= lapse == LONGEST_WAIT


def test_health_moves_after_the_latest_order_there_can_be_are_dates() -> None:
    rules = FunnelRules(health=EXTREME)
    moves = _health_moves(LATEST_TIME, 100.0, rules)
    assert [at for at, _, _ in moves] == [LATEST_TIME + timedelta(days=2000), LATEST_TIME + LONGEST_WAIT]
    assert moves[-1][0] < datetime(9999, 12, 31, tzinfo=UTC)

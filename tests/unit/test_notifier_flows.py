"""Which flows a funnel event triggers, and what is skipped at planning time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.domain.flows import PlannedMessage, Skipped, plan
from shared.examples import example_files
from shared.funnel_events import decode_funnel_event
from shared.notifier_rules import FlowName, NotifierRules
from tests.builders import funnel_event

T0 = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)
RULES = NotifierRules()


def flows_of(kind: str, payload: dict[str, Any], rules: NotifierRules = RULES, **profile: Any) -> list[str]:
    event = funnel_event(kind, "demo", "c1", T0, payload, **profile)
    return [item.flow.value for item in plan(event, rules, T0)]


def stage(from_stage: str, to_stage: str) -> dict[str, object]:
    return {"from_stage": from_stage, "to_stage": to_stage, "reason": "test"}


@pytest.mark.parametrize(
    ("to_stage", "flow"),
    [("first_time", "welcome"), ("repeat", "repeat_milestone"), ("loyal", "vip"), ("advocate", "referral")],
)
def test_reaching_a_stage_triggers_its_flow(to_stage: str, flow: str) -> None:
    assert flows_of("stage_changed", stage("prospect", to_stage)) == [flow]


def test_a_stage_corrected_down_by_a_refund_triggers_nothing() -> None:
    assert flows_of("stage_changed", stage("repeat", "first_time")) == []


def test_triggers_of_the_other_flows() -> None:
    order = {"order_id": "o1", "total": "30", "currency": "EUR"}
    assert flows_of("order_placed", order) == ["review_request", "follow_up"]
    cart = {"cart_id": "k", "last_activity_at": T0.isoformat(), "source": "timer"}
    assert flows_of("cart_abandoned", cart) == ["abandoned_cart"]
    assert flows_of("health_changed", {"from_health": "active", "to_health": "at_risk", "reason": "r"}) == [
        "win_back"
    ]
    assert flows_of("health_changed", {"from_health": "at_risk", "to_health": "lapsed", "reason": "r"}) == []
    assert flows_of("birthday_due", {"birthday": "1990-11-28", "days_before": 7}) == ["birthday"]
    assert flows_of("customer_updated", {"changed": ["email"]}) == []


def test_a_low_csat_also_alerts_support() -> None:
    assert flows_of("survey_scored", {"survey_id": "s", "level": "none", "csat": 4}) == ["survey_thanks"]
    assert flows_of("survey_scored", {"survey_id": "s", "level": "none", "csat": 2}) == [
        "survey_thanks",
        "support_alert",
    ]


def test_delayed_flows_are_due_after_their_delay_and_expire_after_their_window() -> None:
    event = funnel_event(
        "order_placed", "demo", "c1", T0, {"order_id": "o1", "total": "30", "currency": "EUR"}
    )
    review, follow_up = plan(event, RULES, T0 + timedelta(minutes=1))
    assert isinstance(review, PlannedMessage)
    assert isinstance(follow_up, PlannedMessage)
    assert review.due_at == T0 + timedelta(minutes=1, days=7)
    assert follow_up.due_at == T0 + timedelta(minutes=1, days=30)
    assert review.send_before == review.due_at + RULES.flow(FlowName.REVIEW_REQUEST).send_within
    assert review.trigger["type"] == "order_placed"


def test_a_trigger_older_than_the_flows_max_age_is_skipped() -> None:
    event = funnel_event("stage_changed", "demo", "c1", T0, stage("prospect", "first_time"))
    [item] = plan(event, RULES, T0 + timedelta(days=2, seconds=1))
    assert isinstance(item, Skipped)
    assert item.reason == "trigger_too_old"


def test_marketing_needs_consent_and_transactional_does_not() -> None:
    assert flows_of("stage_changed", stage("prospect", "first_time"), accepts_marketing=False) == ["welcome"]
    event = funnel_event(
        "stage_changed", "demo", "c1", T0, stage("first_time", "repeat"), accepts_marketing=None
    )
    [item] = plan(event, RULES, T0)
    assert isinstance(item, Skipped)
    assert item.reason == "no_marketing_consent"


def test_no_email_is_skipped_and_a_disabled_flow_plans_nothing() -> None:
    event = funnel_event("stage_changed", "demo", "c1", T0, stage("prospect", "first_time"), email=None)
    [item] = plan(event, RULES, T0)
    assert isinstance(item, Skipped)
    assert item.reason == "no_email"
    quiet = NotifierRules.model_validate({"flows": {"welcome": {"enabled": False}}})
    assert flows_of("stage_changed", stage("prospect", "first_time"), rules=quiet) == []


def test_store_overrides_keep_the_other_defaults() -> None:
    rules = NotifierRules.model_validate({"flows": {"review_request": {"delay": 30}}})
    assert rules.flow(FlowName.REVIEW_REQUEST).delay == timedelta(seconds=30)
    assert rules.flow(FlowName.FOLLOW_UP).delay == timedelta(days=30)
    with pytest.raises(ValueError, match="unknown flows"):
        NotifierRules.model_validate({"flows": {"welcom": {}}})
    with pytest.raises(ValueError, match="percentage"):
        NotifierRules.model_validate({"flows": {"vip": {"coupon": {"kind": "percent", "value": 150}}}})


def test_support_alert_without_a_support_webhook_is_skipped_visibly() -> None:
    event = funnel_event("survey_scored", "demo", "c1", T0, {"survey_id": "s", "level": "none", "csat": 1})
    _, alert = plan(event, RULES, T0)
    assert isinstance(alert, Skipped)
    assert alert.reason == "no_recipient"
    hooked = NotifierRules.model_validate(
        {"support_webhook": {"url": "https://support.example/hook", "secret": "s3cret-value"}}
    )
    _, alert = plan(event, hooked, T0)
    assert isinstance(alert, PlannedMessage)
    assert alert.channel == "support"


@pytest.mark.parametrize("path", example_files("funnel-events"), ids=lambda p: p.stem)
def test_every_funnel_example_can_be_planned(path: object) -> None:
    event = decode_funnel_event(path.read_bytes())  # type: ignore[attr-defined]
    for item in plan(event, RULES, event.occurred_at):
        assert item.store_id == event.store_id

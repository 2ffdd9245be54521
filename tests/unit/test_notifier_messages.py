"""The trigger stored with a message decodes back into its funnel-event payload; the support alert's body."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.notifier.domain.messages import (
    KnownCustomer,
    Message,
    MessageStatus,
    decode_trigger,
    encode_trigger,
    trigger_currency,
)
from services.notifier.domain.support import alert_subject, support_alert
from shared.examples import example_files
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.funnel_events import CartAbandoned, OrderRecorded, SurveyScored, decode_funnel_event

T0 = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize("path", example_files("funnel-events"), ids=lambda p: p.stem)
def test_every_example_trigger_decodes_back_into_its_payload(path: Path) -> None:
    event = decode_funnel_event(path.read_bytes())
    decoded = decode_trigger(encode_trigger(event))
    payload = getattr(event, "payload", None)
    assert decoded == payload


def test_an_unknown_or_outdated_trigger_decodes_to_none() -> None:
    assert decode_trigger({}) is None
    assert decode_trigger({"type": "no_such_event"}) is None
    assert decode_trigger({"type": "order_placed", "order_id": "o1"}) is None  # total and currency missing


def test_the_currency_comes_from_orders_and_carts_only() -> None:
    order = OrderRecorded(order_id="o1", total=Decimal("10"), currency="EUR")
    cart = CartAbandoned(cart_id="k1", currency="GBP", last_activity_at=T0, source="timer")
    survey = SurveyScored(survey_id="s1", level=SurveyLevel.AFFECTIVE)
    assert [trigger_currency(t) for t in (order, cart, survey, None)] == ["EUR", "GBP", None, None]


def _customer(stage: LoyaltyStage) -> KnownCustomer:
    return KnownCustomer(
        store_id="demo",
        customer_id="c1",
        email="c1@example.com",
        phone=None,
        accepts_marketing=True,
        stage=stage,
        health=Health.AT_RISK,
        profile={"first_name": "Ada", "orders_count": 4},
        last_order_at=None,
        last_cart_abandoned_at=None,
        unsubscribe_token="t",
        unsubscribed_at=None,
        suppressed_at=None,
        suppressed_reason=None,
    )


def _message(trigger: SurveyScored | None) -> Message:
    return Message(
        id=7, store_id="demo", customer_id="c1", flow="support_alert", trigger_event_id="e1",
        channel="support", status=MessageStatus.SENDING, skip_reason=None, to_address=None, trigger=trigger,
        subject=None, due_at=T0, attempts=1, last_error=None, created_at=T0, sent_at=None, marketing=False,
        trigger_at=T0, send_before=None, claimed_at=T0, coupon_code=None, converted_at=None,
        converted_order_id=None, revenue=None,
    )  # fmt: skip


def test_a_loyal_customers_low_score_is_a_priority_alert_with_the_survey() -> None:
    survey = SurveyScored(survey_id="s1", level=SurveyLevel.AFFECTIVE, csat=1, nps=3)
    alert = support_alert(_message(survey), _customer(LoyaltyStage.LOYAL))
    assert alert == {
        "type": "low_satisfaction",
        "priority": True,
        "store_id": "demo",
        "customer_id": "c1",
        "stage": "loyal",
        "health": "at_risk",
        "email": "c1@example.com",
        "first_name": "Ada",
        "orders_count": 4,
        "survey": {"survey_id": "s1", "csat": 1, "ces": None, "nps": 3, "level": "affective"},
    }
    assert alert_subject(_customer(LoyaltyStage.LOYAL)) == "Low satisfaction from a loyal customer (priority)"


def test_a_repeat_customers_alert_is_no_priority() -> None:
    alert = support_alert(_message(None), _customer(LoyaltyStage.REPEAT))
    assert alert["priority"] is False
    assert alert["survey"] == dict.fromkeys(("survey_id", "csat", "ces", "nps", "level"))
    assert alert_subject(_customer(LoyaltyStage.REPEAT)) == "Low satisfaction from a repeat customer"

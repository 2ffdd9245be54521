"""`make demo`'s report renderers, its customers answering their emails, and its wait for the pipeline."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from rich.console import Console, RenderableType

from deploy.demo import wait_until_settled
from deploy.simulator import report
from deploy.simulator.actions import OrderPlaced
from deploy.simulator.responses import Coupon, Invitation, discount, responses
from tests.unit.test_simulator_expectations import END, build


def _text(renderable: RenderableType) -> str:
    console = Console(width=160, record=True)
    console.print(renderable)
    return console.export_text()


FUNNEL = {
    "customers": 7,
    "cells": [
        {"stage": "prospect", "health": "active", "customers": 3},
        {"stage": "repeat", "health": "at_risk", "customers": 2},
        {"stage": "advocate", "health": "active", "customers": 2},
    ],
}
FLOWS = [
    {
        "flow": "abandoned_cart",
        "enabled": True,
        "sent": 4,
        "pending": 1,
        "failed": 0,
        "skipped": {"trigger_too_old": 10, "no_marketing_consent": 2},
        "converted": 1,
        "revenue": "42.50",
        "coupons_issued": 4,
        "coupons_redeemed": 1,
    },
    {"flow": "welcome", "enabled": False, "sent": 3, "skipped": {}, "revenue": "0"},
]


def test_the_funnel_shows_every_stage_and_health_with_totals() -> None:
    text = _text(report.funnel_table(FUNNEL))
    assert "7 customers" in text
    for stage in report.STAGES:
        assert stage in text
    assert "at_risk" in text
    # The bottom row sums each health over the stages.
    assert "│ all │ 5 │ 2 │ 0 │ 7 │ │" in [" ".join(line.split()) for line in text.splitlines()]


def test_flows_add_up_and_explain_skips() -> None:
    text = _text(report.flows_table(FLOWS))
    assert "welcome (off)" in text
    assert "42.50" in text
    assert "trigger_too_old 10 (history older than the flow's max age" in text
    total = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("all"))
    assert total.split("│")[2].strip() == "7"  # sent
    assert total.split("│")[5].strip() == "12"  # skipped


def test_missing_endpoints_say_na_instead_of_a_number() -> None:
    for render in (report.funnel_table, report.retention_table, report.flows_table, report.audiences_table):
        assert "n/a (404: not served yet)" in _text(render(None, "404: not served yet"))


def test_audiences_and_retention_render_their_contracts() -> None:
    audiences = [{"name": "win_back", "description": "lapsing buyers", "size": 12, "exportable": 9}]
    assert "lapsing buyers" in _text(report.audiences_table(audiences))
    retention = {"B": 10, "E": 12, "N": 4, "crr": 80.0, "repeat_purchase_rate": 25.5, "orders": 30}
    text = _text(report.retention_table(retention))
    assert "80.0 %" in text
    assert "(12 − 4) / 10" in text


def test_emails_are_counted_by_subject_without_the_names() -> None:
    messages = [
        {"to": ["ana@example.com"], "subject": "Ana, how do you like your Mug?"},
        {"to": ["bo@example.com"], "subject": "Bo, how do you like your Kettle?"},
        {"to": ["ana@example.com"], "subject": "Welcome, Ana"},
        {"to": ["someone@else.example"], "subject": "Hi"},
    ]
    text = _text(report.emails_table(messages, {"ana@example.com": "Ana", "bo@example.com": "Bo"}))
    assert "4 in all, 3 to this run's customers" in text
    rows = [" ".join(line.split()) for line in text.splitlines()]
    assert "│ 2 │ Ana, how do you like your Mug? │ ana@example.com │" in rows
    assert "│ 1 │ Welcome, Ana │ ana@example.com │" in rows
    assert "Hi " not in text


def test_some_customers_answer_with_an_order_redeeming_their_coupon() -> None:
    history, _ = build(seed=8, customers=200)
    invitations = [
        Invitation(shopper=s, orders_so_far=3, coupons=(Coupon("CART-1", "percent", Decimal("10")),))
        for s in history.shoppers
    ]
    sessions = responses(8, invitations, END)
    assert sessions == responses(8, invitations, END)
    assert 0.2 * len(invitations) < len(sessions) < 0.5 * len(invitations)
    for session in sessions:
        (order,) = session.actions
        assert isinstance(order, OrderPlaced)
        assert order.number == 4
        assert order.order_id == order.shopper.customer_id * 100 + 4
        assert order.discount_code == "CART-1"
        assert order.total == order.subtotal - discount(
            Coupon("CART-1", "percent", Decimal("10")), order.subtotal
        )


def test_discounts_by_coupon_kind() -> None:
    assert discount(Coupon("A", "percent", Decimal("15")), Decimal("40.00")) == Decimal("6.00")
    assert discount(Coupon("B", "fixed", Decimal("5")), Decimal("3.00")) == Decimal("3.00")
    assert discount(Coupon("C", "cashback", Decimal("5")), Decimal("40.00")) == Decimal("0")
    assert discount(None, Decimal("40.00")) == Decimal("0")


class FakeServices:
    """Consumes 100 events a poll, then the notifier's counts move twice and settle."""

    def __init__(self) -> None:
        self.consumed_events = 0.0
        self.polls = 0
        self.pending_messages = 3

    def consumed(self) -> float:
        self.consumed_events += 100
        return self.consumed_events

    def snapshot(self) -> tuple[object, ...]:
        self.polls += 1
        return (min(self.polls, 3),)

    def pending(self) -> int:
        return self.pending_messages


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_demo_waits_for_the_segmenter_then_for_quiet() -> None:
    services, clock = FakeServices(), FakeClock()
    settled = wait_until_settled(
        services,  # type: ignore[arg-type]
        consumed_target=500,
        settle_after=0.0,
        timeout=60,
        clock=clock,
        sleep=clock.sleep,
    )
    assert settled
    assert services.consumed_events >= 500
    assert 5 <= clock.now < 15


def test_the_demo_waits_for_delayed_flows_while_messages_are_pending() -> None:
    services, clock = FakeServices(), FakeClock()
    settle_after = timedelta(seconds=40).total_seconds()
    assert wait_until_settled(
        services,  # type: ignore[arg-type]
        consumed_target=None,
        settle_after=settle_after,
        timeout=60,
        clock=clock,
        sleep=clock.sleep,
    )
    assert clock.now >= 40


def test_the_demo_gives_up_at_the_timeout() -> None:
    services, clock = FakeServices(), FakeClock()
    assert not wait_until_settled(
        services,  # type: ignore[arg-type]
        consumed_target=10**9,
        settle_after=0.0,
        timeout=30,
        clock=clock,
        sleep=clock.sleep,
    )

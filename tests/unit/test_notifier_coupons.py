"""Coupon codes, terms by flow and stage, redemption and revenue attribution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.notifier.domain.coupons import (
    ALPHABET,
    OpenCoupon,
    SentMessage,
    attributed_message,
    new_code,
    redeemed_by,
    terms,
)
from shared.funnel import LoyaltyStage
from shared.notifier_rules import CouponKind, CouponRule

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=5)


def test_codes_are_unique_readable_and_prefixed() -> None:
    codes = {new_code("CART") for _ in range(20_000)}
    assert len(codes) == 20_000
    for code in list(codes)[:100]:
        prefix, body = code.split("-")
        assert prefix == "CART"
        assert len(body) == 12
        assert set(body) <= set(ALPHABET)
    assert not set("01OIL") & set(ALPHABET)


def test_value_by_stage_and_expiry() -> None:
    rule = CouponRule(
        kind=CouponKind.PERCENT, value=Decimal(15), by_stage={LoyaltyStage.ADVOCATE: Decimal(20)}
    )
    loyal = terms(rule, LoyaltyStage.LOYAL, currency="EUR", trigger_order_total=None, now=T0)
    advocate = terms(rule, LoyaltyStage.ADVOCATE, currency="EUR", trigger_order_total=None, now=T0)
    assert loyal is not None
    assert advocate is not None
    assert (loyal.value, advocate.value) == (Decimal(15), Decimal(20))
    assert loyal.currency is None
    assert loyal.expires_at == T0 + rule.valid_for


def test_cashback_is_a_share_of_the_triggering_order() -> None:
    rule = CouponRule(kind=CouponKind.CASHBACK, value=Decimal(5))
    credit = terms(
        rule, LoyaltyStage.FIRST_TIME, currency="EUR", trigger_order_total=Decimal("59.90"), now=T0
    )
    assert credit is not None
    assert (credit.value, credit.currency) == (Decimal("3.00"), "EUR")
    assert terms(rule, LoyaltyStage.FIRST_TIME, currency="EUR", trigger_order_total=None, now=T0) is None


def test_free_shipping_and_fixed() -> None:
    ship = terms(CouponRule(kind=CouponKind.FREE_SHIPPING, value=Decimal(9)), LoyaltyStage.REPEAT,
                 currency="USD", trigger_order_total=None, now=T0)  # fmt: skip
    fixed = terms(CouponRule(kind=CouponKind.FIXED, value=Decimal(5)), LoyaltyStage.REPEAT,
                  currency="USD", trigger_order_total=None, now=T0)  # fmt: skip
    assert ship is not None
    assert ship.value == 0
    assert fixed is not None
    assert (fixed.value, fixed.currency) == (Decimal(5), "USD")


def test_an_order_redeems_a_valid_code_case_insensitively_but_not_an_expired_one() -> None:
    open_ = [OpenCoupon("CART-ABCDEFGHJKMN", 7, T0 + timedelta(days=3))]
    assert redeemed_by([" cart-abcdefghjkmn "], open_, T0) == open_[0]
    assert redeemed_by(["CART-ABCDEFGHJKMN"], open_, T0 + timedelta(days=4)) is None
    assert redeemed_by(["OTHER"], open_, T0) is None


def test_attribution_prefers_the_coupons_message_then_the_last_touch_within_the_window() -> None:
    sent = [SentMessage(1, T0 - timedelta(days=2)), SentMessage(2, T0 - timedelta(days=1))]
    coupon = OpenCoupon("X", 1, T0 + timedelta(days=1))
    assert attributed_message(coupon, sent, T0, WINDOW) == 1
    assert attributed_message(None, sent, T0, WINDOW) == 2
    assert attributed_message(None, sent, T0 + timedelta(days=5, hours=1), WINDOW) is None
    assert attributed_message(None, [], T0, WINDOW) is None


@given(
    st.lists(st.integers(min_value=0, max_value=20 * 24), max_size=6), st.integers(min_value=0, max_value=480)
)
def test_attribution_only_ever_names_a_message_sent_within_the_window(
    hours: list[int], order_hour: int
) -> None:
    sent = [SentMessage(i, T0 + timedelta(hours=h)) for i, h in enumerate(hours)]
    placed = T0 + timedelta(hours=order_hour)
    chosen = attributed_message(None, sent, placed, WINDOW)
    eligible = [m for m in sent if m.sent_at <= placed <= m.sent_at + WINDOW]
    assert (chosen is None) == (not eligible)
    if chosen is not None:
        assert sent[chosen].sent_at == max(m.sent_at for m in eligible)

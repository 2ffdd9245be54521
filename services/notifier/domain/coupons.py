"""Coupons: unguessable single-use codes, their terms by flow and stage, and which order redeems them.

Codes come from the operating system's CSPRNG over an alphabet without look-alike characters (no 0/O, 1/I/L),
so a customer can type one from a printed email; 12 characters of 31 symbols are about 59 bits, far beyond
guessing at any rate a store's checkout allows. Uniqueness is enforced by the database, not hoped for.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from shared.funnel import LoyaltyStage
from shared.notifier_rules import CouponKind, CouponRule

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 12
CENT = Decimal("0.01")


def new_code(prefix: str = "") -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{prefix}-{body}" if prefix else body


@dataclass(frozen=True)
class CouponTerms:
    kind: CouponKind
    value: Decimal  # percent: the percentage; fixed and cashback: an amount; free shipping: 0
    currency: str | None
    expires_at: datetime


def terms(
    rule: CouponRule,
    stage: LoyaltyStage,
    *,
    currency: str,
    trigger_order_total: Decimal | None,
    now: datetime,
) -> CouponTerms | None:
    """The coupon this message carries, or None when it cannot have one (cashback without an order)."""
    value = rule.value_for(stage)
    if rule.kind == CouponKind.CASHBACK:
        if not trigger_order_total:
            return None
        # A share of what the customer spent, returned as credit: keep the margin in mind
        # (docs/domain.md, "The plays").
        value = (trigger_order_total * value / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        if value <= 0:
            return None
    if rule.kind == CouponKind.FREE_SHIPPING:
        value = Decimal("0")
    return CouponTerms(
        kind=rule.kind,
        value=value,
        currency=currency if rule.kind in (CouponKind.FIXED, CouponKind.CASHBACK) else None,
        expires_at=now + rule.valid_for,
    )


@dataclass(frozen=True)
class OpenCoupon:
    code: str
    message_id: int | None
    expires_at: datetime


def redeemed_by(
    codes_used: Sequence[str], open_coupons: Sequence[OpenCoupon], at: datetime
) -> OpenCoupon | None:
    """The first of our still-valid coupons that an order used (codes compare case-insensitively).
    A referral code is used by a friend, so `open_coupons` are the store's, not only the customer's."""
    used = {c.strip().upper() for c in codes_used}
    for coupon in open_coupons:
        if coupon.code.upper() in used and at <= coupon.expires_at:
            return coupon
    return None


@dataclass(frozen=True)
class SentMessage:
    message_id: int
    sent_at: datetime


def attributed_message(
    coupon: OpenCoupon | None, sent: Sequence[SentMessage], placed_at: datetime, window: timedelta
) -> int | None:
    """Which message earns this order: the one whose coupon it used, else the last one sent within the
    attribution window before it (last touch). Each order is attributed to at most one message.
    `sent` holds the customer's messages and, for a coupon, the message that carried it."""
    in_window = {m.message_id: m for m in sent if m.sent_at <= placed_at <= m.sent_at + window}
    if coupon is not None and coupon.message_id in in_window:
        return coupon.message_id
    if not in_window:
        return None
    return max(in_window.values(), key=lambda m: (m.sent_at, m.message_id)).message_id

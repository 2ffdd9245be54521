"""Where a coupon must exist before its message may go out, and what to do when the platform says no.

A code in an email that the store's checkout refuses is worse than no email: the customer is told "invalid
code" by the shop we speak for. So a coupon is confirmed by the store's platform (Shopify, WooCommerce, or the
store's own coupon webhook) before the message is sent. A platform that is away or busy defers the message
with exponential backoff (it still expires by its `send_within`); one that refuses for good (bad or revoked
credentials, a missing scope, a store that uninstalled us) skips it as `coupon_unavailable`.

Pure rules: no I/O. The adapters raise `PlatformUnavailable` / `PlatformRefused`; the sender asks here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from shared.notifier_rules import CouponKind
from shared.stores import StoreConfig

COUPON_UNAVAILABLE = "coupon_unavailable"
# A platform that is away: retry after 30 s, then 1, 2, 4... minutes, at most 30 minutes apart.
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(minutes=30)
# A provisioning interrupted by a crash is picked up again after this long (nothing was sent yet, and the
# lookup before create makes a second attempt safe). The default of NOTIFIER_PROVISIONING_LEASE_SECONDS.
PROVISIONING_LEASE = timedelta(minutes=2)


class CouponPlatform(StrEnum):
    OURS = "ours"  # the code exists only in our database (no platform connected)
    SHOPIFY = "shopify"
    WOOCOMMERCE = "woocommerce"
    WEBHOOK = "webhook"  # the store's signed coupon_webhook (stores on neither platform)


class Delivery(StrEnum):
    CODE = "code"  # a discount code the customer types at checkout
    STORE_CREDIT = "store_credit"  # credit on the customer's store account (Shopify store credit)


@dataclass(frozen=True)
class Placement:
    platform: CouponPlatform
    delivery: Delivery


def placement(store: StoreConfig, kind: CouponKind) -> Placement:
    """Where this store's coupons live. Shopify first when its Admin API is connected, then WooCommerce's
    REST API, then the store's coupon webhook; otherwise the code is ours alone (README: what that means).
    Cashback becomes Shopify store credit where the store enables it, otherwise a fixed-amount code."""
    if store.shopify is not None and store.shopify.connected:
        credit = kind == CouponKind.CASHBACK and store.shopify.store_credit
        return Placement(CouponPlatform.SHOPIFY, Delivery.STORE_CREDIT if credit else Delivery.CODE)
    if store.woocommerce is not None and store.woocommerce.connected:
        return Placement(CouponPlatform.WOOCOMMERCE, Delivery.CODE)
    if store.notifier.coupon_webhook is not None:
        return Placement(CouponPlatform.WEBHOOK, Delivery.CODE)
    return Placement(CouponPlatform.OURS, Delivery.CODE)


def consent_platform(store: StoreConfig) -> CouponPlatform | None:
    """Where a customer's email marketing consent lives, so an unsubscribe of ours reaches it: the connected
    Shopify shop, else the WooCommerce site that names its opt-in meta field; else nowhere but here."""
    if store.shopify is not None and store.shopify.connected:
        return CouponPlatform.SHOPIFY
    if store.woocommerce is not None and store.woocommerce.connected and store.woocommerce.consent_meta_key:
        return CouponPlatform.WOOCOMMERCE
    return None


class PlatformError(Exception):
    """A platform call that did not confirm the coupon. `reason` is safe to store and show: it never holds
    a credential or a customer's personal data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PlatformUnavailable(PlatformError):
    """Unreachable, timed out, 5xx, 429 or THROTTLED: try again later. `retry_after` when the platform
    said how long to wait."""

    def __init__(self, reason: str, retry_after: timedelta | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PlatformRefused(PlatformError):
    """Refused for good (401/403, a missing scope, the store uninstalled us, the input rejected with
    userErrors): asking again gives the same answer."""


class StoreWideRefusal(PlatformRefused):
    """Refused for every call of this store (bad token, missing scope, uninstalled): the store's connection
    status shows the reason until it is fixed."""


@dataclass(frozen=True)
class CouponOrder:
    """A coupon as the platform must hold it: for one customer, single use, expiring with ours."""

    code: str
    kind: CouponKind
    value: Decimal  # percent: the percentage; fixed and cashback: an amount; free shipping: 0
    currency: str | None
    starts_at: datetime
    expires_at: datetime
    customer_id: str
    email: str | None
    title: str
    delivery: Delivery
    store_id: str


@dataclass(frozen=True)
class Confirmed:
    platform_id: str | None
    created: bool  # False when the lookup found it already there (a retry after a crash or a lost answer)


@dataclass(frozen=True)
class Retry:
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class Unavailable:
    reason: str


def after_failure(
    error: PlatformError, *, attempts: int, now: datetime, send_before: datetime | None
) -> Retry | Unavailable:
    """What a failed provisioning means for its message. `attempts` counts this one (from 1)."""
    if isinstance(error, PlatformRefused):
        return Unavailable(error.reason)
    delay = min(MAX_RETRY, FIRST_RETRY * (2 ** min(max(attempts - 1, 0), 16)))
    if isinstance(error, PlatformUnavailable) and error.retry_after is not None:
        delay = max(delay, min(error.retry_after, MAX_RETRY))
    due = now + delay
    if send_before is not None and due > send_before:
        # It would only wake up to expire: say now why it was never sent.
        return Unavailable(f"platform still unavailable when the message expired: {error.reason}")
    return Retry(due, error.reason)


_SECRETS = re.compile(r"(shpat|shpca|shppa|ck|cs)_[A-Za-z0-9_]+")


def safe_reason(text: str, limit: int = 300) -> str:
    """A platform's message trimmed for our records, with anything shaped like a token masked."""
    return _SECRETS.sub("[redacted]", " ".join(text.split()))[:limit]

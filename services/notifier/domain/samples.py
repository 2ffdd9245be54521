"""Sample customers and triggers: for previews of any stage, test sends, and validating templates.

A preview must look like the real thing without touching a real customer, so each funnel stage has a
believable sample customer, and each flow the trigger it would really get (a cart, an order, a survey...).
The coupon is a made-up code of the flow's own terms, never issued. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from services.notifier.domain.coupons import terms as coupon_terms
from services.notifier.domain.personalisation import Coupon, Product, StoreFacts, context
from shared.funnel import LoyaltyStage
from shared.notifier_rules import Brand, CouponKind, FlowName, Location, NotifierRules

EMAIL_FLOWS: tuple[str, ...] = tuple(f.value for f in FlowName if f != FlowName.SUPPORT_ALERT)

# Which flows hand over what, beyond what every flow has (customer, store, brand, coupon, location...).
# A template printing something its flow does not provide fails validation instead of rendering blank.
FLOW_DATA: dict[str, frozenset[str]] = {
    FlowName.WELCOME: frozenset(),
    FlowName.ABANDONED_CART: frozenset({"items", "total", "recovery_url", "recommendations"}),
    FlowName.REVIEW_REQUEST: frozenset({"items", "total"}),
    FlowName.FOLLOW_UP: frozenset({"items", "total", "recommendations"}),
    FlowName.REPEAT_MILESTONE: frozenset({"recommendations"}),
    FlowName.VIP: frozenset(),
    FlowName.REFERRAL: frozenset({"referral"}),
    FlowName.WIN_BACK: frozenset({"recommendations"}),
    FlowName.BIRTHDAY: frozenset({"recommendations"}),
    FlowName.SURVEY_THANKS: frozenset({"survey"}),
}
FLOW_SPECIFIC = frozenset().union(*FLOW_DATA.values())


def restrict(flow: str, data: dict[str, Any]) -> dict[str, Any]:
    """Only what the flow provides: the same names in previews, validation and real sends."""
    provided = FLOW_DATA.get(flow, frozenset())
    return {k: v for k, v in data.items() if k not in FLOW_SPECIFIC or k in provided}


_STAGE_ORDERS = {
    LoyaltyStage.PROSPECT: 0,
    LoyaltyStage.FIRST_TIME: 1,
    LoyaltyStage.REPEAT: 2,
    LoyaltyStage.LOYAL: 5,
    LoyaltyStage.ADVOCATE: 9,
}


def sample_profile(
    stage: LoyaltyStage, locale: str | None, city: str | None, country: str | None
) -> dict[str, Any]:
    orders = _STAGE_ORDERS[stage]
    return {
        "first_name": "Alex",
        "last_name": "Sample",
        "email": "alex.sample@example.com",
        "locale": locale,
        "city": city,
        "country": country,
        "stage": stage.value,
        "orders_count": orders,
        "total_spent": str(Decimal("42.50") * orders),
        "last_products": [{"product_id": "sample-1", "title": "Everyday Mug"}] if orders else [],
        "accepts_marketing": True,
    }


def sample_trigger(flow: str, currency: str, site_url: str = "https://shop.example.com") -> dict[str, Any]:
    items = [
        {"product_id": "sample-1", "title": "Everyday Mug", "quantity": 2, "price": "18.00"},
        {"product_id": "sample-2", "title": "House Blend 250 g", "quantity": 1, "price": "12.50"},
    ]
    base: dict[str, Any] = {"currency": currency}
    if flow == FlowName.ABANDONED_CART:
        return {
            **base,
            "type": "cart_abandoned",
            "items": items,
            "total": "48.50",
            "recovery_url": f"{site_url.rstrip('/')}/cart/recover/sample",
        }
    if flow in (FlowName.REVIEW_REQUEST, FlowName.FOLLOW_UP):
        return {**base, "type": "order_placed", "order_id": "sample-order", "items": items, "total": "48.50"}
    if flow == FlowName.SURVEY_THANKS:
        return {**base, "type": "survey_scored", "csat": 5, "level": "conative"}
    return base


SAMPLE_RECOMMENDATIONS = (
    Product("sample-3", "Pour-Over Kit", Decimal("39.00")),
    Product("sample-4", "Single Origin Ethiopia 250 g", Decimal("14.90")),
)


def sample_coupon(
    flow: str, rules: NotifierRules, stage: LoyaltyStage, currency: str, total: Decimal | None, now: datetime
) -> Coupon | None:
    """The flow's own terms with a code that was never issued (it cannot be redeemed)."""
    rule = rules.flow(FlowName(flow)).coupon
    if rule is None:
        return None
    found = coupon_terms(rule, stage, currency=currency, trigger_order_total=total, now=now)
    if found is None:
        return None
    # Real codes carry 12 characters after the prefix: this one can never match an issued code.
    return Coupon(
        f"{rule.prefix}-SAMPLE" if rule.prefix else "SAMPLE",
        found.kind,
        found.value,
        found.currency,
        found.expires_at,
    )


# The richest data every template may meet: what validation analyses and renders templates against.
_VALIDATION_RULES = NotifierRules.model_validate(
    {
        "site_url": "https://shop.example.com",
        "community_url": "https://shop.example.com/community",
        "support_email": "help@shop.example.com",
        "locations": [
            {
                "name": "Flagship",
                "city": "Jakarta",
                "country": "Indonesia",
                "address": "Jl. Sudirman 1",
                "url": "https://shop.example.com/stores/jakarta",
            }
        ],
        "local_offers": {"Indonesia": "Gratis ongkir ke seluruh Indonesia."},
        "referral": {"friend_gets": "15%", "you_get": "5%"},
    }
)
_VALIDATION_BRAND = Brand.model_validate(
    {
        "logo_url": "https://shop.example.com/logo.png",
        "postal_address": "Jl. Sudirman 1, Jakarta",
        "legal_footer": "PT Example",
    }
)


def template_data(flow: str, *, kind: CouponKind | None = None) -> dict[str, Any]:
    now = datetime(2026, 1, 1)
    store = StoreFacts(
        "sample",
        "Sample Store",
        "IDR",
        _VALIDATION_RULES,
        _VALIDATION_BRAND,
        "Sample Store",
        "help@shop.example.com",
    )
    profile = sample_profile(LoyaltyStage.LOYAL, "id-ID", "Jakarta", "Indonesia")
    trigger = {**sample_trigger(FlowName.ABANDONED_CART, "IDR"), "csat": 1, "level": "action"}
    coupon = Coupon("SAMPLE", kind or CouponKind.PERCENT, Decimal(10), "IDR", now + timedelta(days=30))
    return data_for(
        flow,
        store,
        profile,
        trigger,
        coupon,
        SAMPLE_RECOMMENDATIONS,
        "https://notify.example.com/u/sample",
        "en",
    )


def data_for(
    flow: str,
    store: StoreFacts,
    profile: Mapping[str, Any],
    trigger: Mapping[str, Any],
    coupon: Coupon | None,
    recommendations: tuple[Product, ...] | list[Product],
    unsubscribe_url: str | None,
    language: str,
) -> dict[str, Any]:
    return restrict(
        flow,
        context(
            flow=flow,
            store=store,
            customer=profile,
            trigger=trigger,
            coupon=coupon,
            recommendations=recommendations,
            unsubscribe_url=unsubscribe_url,
            language=language,
        ),
    )


def nearest_sample_place(locations: tuple[Location, ...]) -> tuple[str | None, str | None]:
    """A sample customer lives where the store's first shop is, so previews show the location block."""
    first = locations[0] if locations else None
    return (first.city, first.country) if first else (None, None)

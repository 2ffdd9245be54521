"""What a template sees: a pure function of the customer, the trigger, the store and the offers.

Money is formatted here, in the customer's locale and the amount's currency (the store's by default), so
templates never print a bare Decimal. Location content comes from the store's config: the nearest shop (same
city, else same country) and a local offer for the customer's country. Absent facts stay absent (None or
empty): templates test them and fall back to friendly wording, never printing blank or "None".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from shared.notifier_rules import CouponKind, Location, NotifierRules

MAX_RECOMMENDATIONS = 3


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str | None
    price: Decimal | None = None
    category: str | None = None


@dataclass(frozen=True)
class Coupon:
    code: str
    kind: CouponKind
    value: Decimal
    currency: str | None
    expires_at: datetime
    # Cashback credited to the customer's store credit account rather than a code to type at checkout.
    store_credit: bool = False


@dataclass(frozen=True)
class StoreFacts:
    store_id: str
    name: str
    currency: str
    rules: NotifierRules


def babel_locale(tag: str | None) -> Locale:
    if tag:
        try:
            return Locale.parse(tag.replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            pass
    return Locale("en")


def money(amount: object, currency: str, locale: Locale) -> str | None:
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return None
    return str(format_currency(value, currency, locale=locale))


def nearest_location(locations: Sequence[Location], city: str | None, country: str | None) -> Location | None:
    def same(a: str | None, b: str | None) -> bool:
        return bool(a and b and a.strip().casefold() == b.strip().casefold())

    return next((loc for loc in locations if same(loc.city, city)), None) or next(
        (loc for loc in locations if same(loc.country, country)), None
    )


def local_offer(offers: Mapping[str, str], country: str | None) -> str | None:
    if not country:
        return None
    wanted = country.strip().casefold()
    return next((text for key, text in offers.items() if key.strip().casefold() == wanted), None)


def tracked(url: str, flow: str) -> str:
    """Links carry UTM tags so the store's analytics credit the flow (as marketers expect)."""
    parts = urlsplit(url)
    tags = urlencode({"utm_source": "loyalty-funnel", "utm_medium": "email", "utm_campaign": flow})
    query = f"{parts.query}&{tags}" if parts.query else tags
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def product_url(site_url: str, product_id: str) -> str:
    return f"{site_url.rstrip('/')}/products/{product_id}"


def coupon_description(coupon: Coupon, locale: Locale) -> str:
    if coupon.kind == CouponKind.PERCENT:
        return f"{format_decimal(coupon.value.normalize(), locale=locale)}% off"
    if coupon.kind == CouponKind.FREE_SHIPPING:
        return "free shipping"
    amount = money(coupon.value, coupon.currency or "USD", locale)
    return f"{amount} off" if coupon.kind == CouponKind.FIXED else f"{amount} credit"


def _items(
    items: Sequence[Mapping[str, Any]], currency: str, locale: Locale, site: str, flow: str
) -> list[Any]:
    return [
        {
            "title": item.get("title") or None,
            "quantity": item.get("quantity", 1),
            "price": money(item.get("price", "0"), currency, locale),
            "url": tracked(product_url(site, str(item["product_id"])), flow),
        }
        for item in items
        if item.get("product_id")
    ]


def context(
    *,
    flow: str,
    store: StoreFacts,
    customer: Mapping[str, Any],
    trigger: Mapping[str, Any],
    coupon: Coupon | None,
    recommendations: Sequence[Product],
    unsubscribe_url: str | None,
    language: str = "en",
) -> dict[str, Any]:
    """`language`: the template's, for words such as month names; money follows the customer's locale."""
    rules = store.rules
    locale = babel_locale(customer.get("locale"))
    words = babel_locale(language)
    currency = str(trigger.get("currency") or customer.get("currency") or store.currency)
    site = rules.site_url
    location = nearest_location(rules.locations, customer.get("city"), customer.get("country"))
    items = _items(trigger.get("items") or [], currency, locale, site, flow)
    ctx: dict[str, Any] = {
        "flow": flow,
        "customer": {
            "first_name": customer.get("first_name") or None,
            "last_name": customer.get("last_name") or None,
            "city": customer.get("city") or None,
            "country": customer.get("country") or None,
            "stage": customer.get("stage"),
            "orders_count": customer.get("orders_count", 0),
            "total_spent": money(customer.get("total_spent", "0"), currency, locale),
            "last_products": [p["title"] for p in customer.get("last_products", []) if p.get("title")],
        },
        "store": {
            "id": store.store_id,
            "name": store.name,
            "url": tracked(site, flow),
            "support_email": rules.support_email,
            "community_url": tracked(rules.community_url, flow) if rules.community_url else None,
            "survey_url": tracked(rules.loyalty_survey_url, flow),
        },
        "location": location.model_dump() if location else None,
        "local_offer": local_offer(rules.local_offers, customer.get("country")),
        "items": items,
        "total": money(trigger["total"], currency, locale) if trigger.get("total") else None,
        "recovery_url": tracked(str(trigger["recovery_url"]), flow) if trigger.get("recovery_url") else None,
        "recommendations": [
            {
                "title": p.title,
                "price": money(p.price, currency, locale) if p.price is not None else None,
                "url": tracked(product_url(site, p.product_id), flow),
            }
            for p in recommendations[:MAX_RECOMMENDATIONS]
            if p.title
        ],
        "coupon": None,
        "referral": {"friend_gets": rules.referral.friend_gets, "you_get": rules.referral.you_get},
        "survey": {"csat": trigger.get("csat"), "level": trigger.get("level")},
        "unsubscribe_url": unsubscribe_url,
    }
    if coupon is not None:
        ctx["coupon"] = {
            "code": coupon.code,
            "description": coupon_description(coupon, locale),
            "expires_on": format_date(coupon.expires_at.date(), format="long", locale=words),
            "store_credit": coupon.store_credit,
        }
    return ctx

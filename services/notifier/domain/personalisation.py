"""What a template sees: a pure function of the customer, the trigger, the store and the offers.

Money is formatted here, in the customer's locale and the amount's currency (the store's by default), so
templates never print a bare Decimal. Location content comes from the store's config: the nearest shop (same
city, else same country) and a local offer for the customer's country. Absent facts stay absent (None or
empty): templates test them and fall back to friendly wording, never printing blank or "None".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_percent

from shared.notifier_rules import Brand, CouponKind, Location, NotifierRules, localised
from shared.stores import StoreConfig

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
    brand: Brand = field(default_factory=Brand)
    sender_name: str | None = None
    reply_to: str | None = None
    # The store's own hosts beyond those its notifier rules name (its Shopify and WooCommerce domains):
    # StoreConfig.link_hosts().
    link_hosts: frozenset[str] = frozenset()

    def allowed_hosts(self) -> frozenset[str]:
        rules = self.rules
        named = (rules.site_url, rules.community_url, rules.survey_url)
        own = {host for url in named if url and (host := _host(url)) is not None}
        return frozenset(h.lower() for h in (*own, *self.link_hosts, *rules.allowed_link_hosts))

    @classmethod
    def of(cls, store: StoreConfig) -> StoreFacts:
        return cls(
            store.store_id,
            store.name,
            store.currency,
            store.notifier,
            brand=store.brand,
            sender_name=store.email.from_name,
            reply_to=store.email.reply_to,
            link_hosts=store.link_hosts(),
        )


# The words of an offer, per language: "{v}" is the percentage or amount, formatted for the locale.
# Templates phrase the sentence around them; stores that want other words override the templates.
_OFFER_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "percent": "{v} off",
        "fixed": "{v} off",
        "free_shipping": "free shipping",
        "credit": "{v} credit",
    },
    "id": {
        "percent": "diskon {v}",
        "fixed": "potongan {v}",
        "free_shipping": "gratis ongkir",
        "credit": "saldo {v}",
    },
    "ms": {
        "percent": "diskaun {v}",
        "fixed": "potongan {v}",
        "free_shipping": "penghantaran percuma",
        "credit": "kredit {v}",
    },
    "tr": {
        "percent": "{v} indirim",
        "fixed": "{v} indirim",
        "free_shipping": "ücretsiz kargo",
        "credit": "{v} alışveriş kredisi",
    },
    "de": {
        "percent": "{v} Rabatt",
        "fixed": "{v} Rabatt",
        "free_shipping": "kostenloser Versand",
        "credit": "{v} Guthaben",
    },
    "fr": {
        "percent": "{v} de réduction",
        "fixed": "{v} de réduction",
        "free_shipping": "la livraison offerte",
        "credit": "{v} de crédit",
    },
    "es": {
        "percent": "un {v} de descuento",
        "fixed": "{v} de descuento",
        "free_shipping": "envío gratis",
        "credit": "{v} de saldo",
    },
}


# Pure functions of a few distinct values (the locales customers have, the store's links per flow), called
# several times for every message: parsing a locale and building a tagged URL were a third of a welcome's
# template data (a welcome's data_for: 150 us of CPU, 81 with these cached, measured in-process).
@lru_cache(maxsize=1024)
def babel_locale(tag: str | None) -> Locale:
    if tag:
        try:
            return Locale.parse(tag.replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            pass
    return Locale("en")


def money(amount: object, currency: str, locale: Locale) -> str | None:
    return _money(str(amount), currency, locale)


# Prices repeat (a catalogue's, a few totals): babel's formatting of one was about 2 % of the notifier's busy
# samples at 1,000 events/s. Keyed by the amount's text, so 18.0 and 18.00 are formatted each as before.
@lru_cache(maxsize=4096)
def _money(amount: str, currency: str, locale: Locale) -> str | None:
    try:
        value = Decimal(amount)
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


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


def safe_link(url: object, allowed_hosts: frozenset[str]) -> str | None:
    """The URL if an email may carry it: https, on one of the store's own hosts (`*.example.com` allows
    subdomains), without credentials, spaces or control characters; else None, and the template falls back
    to the store's own link. Applied when the message is built, so data stored before this rule is covered."""
    if not isinstance(url, str) or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port in (None, 443)
    except ValueError:
        return None
    host = _host(url)
    if parts.scheme != "https" or host is None or "@" in parts.netloc or not port_ok:
        return None
    for allowed in allowed_hosts:
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return url
    return None


@lru_cache(maxsize=4096)
def tracked(url: str, flow: str) -> str:
    """Links carry UTM tags so the store's analytics credit the flow (as marketers expect)."""
    parts = urlsplit(url)
    tags = urlencode({"utm_source": "loyalty-funnel", "utm_medium": "email", "utm_campaign": flow})
    query = f"{parts.query}&{tags}" if parts.query else tags
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def product_url(site_url: str, product_id: str) -> str:
    # Product ids come from storefront events: escaped, so one cannot become another path or a query.
    return f"{site_url.rstrip('/')}/products/{quote(product_id, safe='')}"


def coupon_description(coupon: Coupon, locale: Locale, language: str = "en") -> str:
    """ "10% off", "diskon 10%", "%10 indirim", "5,00 € Guthaben": the offer in the email's language."""
    words = _OFFER_WORDS.get(language, _OFFER_WORDS["en"])
    if coupon.kind == CouponKind.PERCENT:
        value = str(format_percent(coupon.value / 100, locale=locale, decimal_quantization=False))
        return words["percent"].format(v=value)
    if coupon.kind == CouponKind.FREE_SHIPPING:
        return words["free_shipping"]
    amount = money(coupon.value, coupon.currency or "USD", locale)
    return words["fixed" if coupon.kind == CouponKind.FIXED else "credit"].format(v=amount)


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
    """`language`: the template's (`de`, `id`...), for words such as month names; money follows the
    customer's locale (`de-AT`), and so do dates when the customer's language is the template's."""
    rules = store.rules
    locale = babel_locale(customer.get("locale"))
    words = locale if locale.language == language.split("-")[0] else babel_locale(language)
    brand = store.brand
    currency = str(trigger.get("currency") or customer.get("currency") or store.currency)
    site = rules.site_url
    location = nearest_location(rules.locations, customer.get("city"), customer.get("country"))
    items = _items(trigger.get("items") or [], currency, locale, site, flow)
    recovery = safe_link(trigger.get("recovery_url"), store.allowed_hosts())
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
        # From a storefront event (whoever held a write key wrote it): only a link to the store's own hosts;
        # the registry's links (site, community, survey) were checked when the registry was loaded.
        "recovery_url": tracked(recovery, flow) if recovery else None,
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
        "referral": {
            "friend_gets": localised(rules.referral.friend_gets, words.language),
            "you_get": localised(rules.referral.you_get, words.language),
        },
        "brand": {
            "sender_name": store.sender_name or store.name,
            "reply_to": store.reply_to,
            "logo_url": brand.logo_url,
            "logo_alt": brand.logo_alt or store.name,
            "logo_width": brand.logo_width,
            "colours": brand.colours.model_dump(),
            "postal_address": brand.postal_address,
            "legal_footer": localised(brand.legal_footer, words.language),
        },
        "locale": language,
        "survey": {"csat": trigger.get("csat"), "level": trigger.get("level")},
        "unsubscribe_url": unsubscribe_url,
    }
    if coupon is not None:
        ctx["coupon"] = {
            "code": coupon.code,
            # percent, fixed, free_shipping, cashback (a code worth the credit) or store_credit (credited
            # to the customer's account by the platform: no code to type).
            "kind": "store_credit" if coupon.store_credit else coupon.kind.value,
            "description": coupon_description(coupon, locale, words.language),
            "expires_on": format_date(coupon.expires_at.date(), format="long", locale=words),
            "store_credit": coupon.store_credit,
        }
    return ctx

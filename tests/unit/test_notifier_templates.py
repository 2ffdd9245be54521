"""Every flow's templates in every language, with rich and with missing data: names, places, money, offers,
never "None", never a blank gap, never Liquid left over, never English in another language's email."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.notifier.adapters.templates import RenderedMessage, TemplateRenderer
from services.notifier.domain.flows import RECOMMENDING_FLOWS
from services.notifier.domain.personalisation import Coupon, Product, StoreFacts, nearest_location
from services.notifier.domain.samples import EMAIL_FLOWS, FLOW_DATA, data_for
from shared.notifier_rules import Brand, CouponKind, Location, NotifierRules

LOCALES = ["en", "id", "ms", "tr", "de", "fr", "es"]
RULES = NotifierRules.model_validate(
    {
        "site_url": "https://shop.example",
        "community_url": "https://shop.example/community",
        "support_email": "halo@shop.example",
        "locations": [
            {"name": "Braga", "city": "Bandung", "country": "Indonesia", "address": "Jl. Braga 10"},
            {"name": "Berlin Mitte", "city": "Berlin", "country": "Germany", "address": "Torstraße 1"},
            {"name": "Hamburg Hafen", "city": "Hamburg", "country": "Germany"},
        ],
        "local_offers": {"germany": "Free delivery in Germany over €40."},
    }
)
BRAND = Brand.model_validate(
    {
        "logo_url": "https://shop.example/logo.png",
        "postal_address": "Jl. Braga 10, Bandung 40111",
        "legal_footer": {"en": "Kopi Nusantara Ltd", "de": "Kopi Nusantara GmbH"},
        "colours": {"primary": "#aa3300"},
    }
)
STORE = StoreFacts("demo", "Kopi Nusantara", "USD", RULES, BRAND, "Kopi Nusantara", None)
RICH_CUSTOMER = {
    "first_name": "Zoë <b>",
    "city": "Berlin",
    "country": "Germany",
    "locale": "de-DE",
    "orders_count": 3,
    "stage": "loyal",
    "last_products": [{"product_id": "p1", "title": "Arabica Gayo"}],
}
RICH_TRIGGER = {
    "type": "order_placed",
    "items": [{"product_id": "p1", "title": "Arabica Gayo", "quantity": 2, "price": "18.00"}],
    "total": "36.00",
    "currency": "EUR",
    "recovery_url": "https://shop.example/cart/k1",
    "csat": 1,
}
EXPIRY = datetime(2026, 12, 1, tzinfo=UTC)
COUPON = Coupon("CART-ABCDEFGHJKMN", CouponKind.PERCENT, Decimal(10), None, EXPIRY)
RECOMMENDED = [Product("p2", "Robusta Dampit", Decimal("34.50"))]
RENDERER = TemplateRenderer()


def render(
    flow: str,
    customer: dict[str, Any],
    trigger: dict[str, Any],
    coupon: Coupon | None,
    *,
    store: StoreFacts = STORE,
    recommendations: list[Product] | None = None,
) -> RenderedMessage:
    locale = customer.get("locale")
    data = data_for(
        flow,
        store,
        customer,
        trigger,
        coupon,
        RECOMMENDED if recommendations is None else recommendations,
        "https://notify.example/u/tok",
        RENDERER.locale_for(flow, locale),
    )
    return RENDERER.render(flow, locale, data)


def visible(html_part: str) -> str:
    """What a reader of the HTML part sees: no head, no style, no tags, entities decoded."""
    body = re.sub(r"(?s)<head>.*?</head>", " ", html_part)
    body = re.sub(r"</?(?:a|strong|b|em|span|img)\b[^>]*>", "", body)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def assert_clean(part: str) -> None:
    assert "None" not in part
    assert not re.search(r"\bnil\b", part)
    assert "{{" not in part
    assert "{%" not in part
    assert "}}" not in part
    assert "%}" not in part
    # A blank before punctuation means something optional rendered empty. French puts a no-break space
    # before ":", "!" and "?", which is not an ordinary space and does not match here.
    flat = re.sub(r"[ \t]+", " ", part.replace("\n", " "))
    assert not re.search(r" [,.!?:;]", flat), flat
    assert not re.search(r"[,:] *[.,]", flat), flat


# Words that give away an English sentence left in another language's email (checked on whole words).
ENGLISH = re.compile(
    r"\b(the|your|you|and|with|order|thank|thanks|hi|here|off|valid|until|unsubscribe|credit|free|"
    r"shipping|cart|visit|review|birthday|gift|friends|we|our)\b",
    re.IGNORECASE,
)
URLS_AND_CODES = r"https?://\S+|\S+@\S+|CART-\w+"
CUSTOMERS: dict[str, dict[str, Any]] = {
    "everything": {
        "first_name": "Dewi",
        "city": "Bandung",
        "country": "Indonesia",
        "orders_count": 4,
        "last_products": [{"product_id": "p1", "title": "Arabica Gayo"}],
    },
    "nothing": {},
    "no_name_no_city": {"orders_count": 1, "last_products": []},
    "name_only": {"first_name": "Ayşe"},
}
TRIGGERS: dict[str, dict[str, Any]] = {
    "with_items": {
        "items": [
            {"product_id": "p1", "title": "Arabica Gayo", "quantity": 2, "price": "18.00"},
            {"product_id": "p3", "quantity": 1, "price": "9.00"},
        ],
        "total": "45.00",
        "currency": "EUR",
        "recovery_url": "https://shop.example/cart/k1",
        "csat": 2,
    },
    "empty": {},
}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("flow", EMAIL_FLOWS)
def test_every_flow_in_every_language_renders_clean(flow: str, locale: str) -> None:
    plain_store = StoreFacts("demo", "Kopi Nusantara", "USD", NotifierRules(), Brand(), None, None)
    for customer_name, customer in CUSTOMERS.items():
        for trigger_name, trigger in TRIGGERS.items():
            for coupon in (COUPON, None):
                for recommendations in (RECOMMENDED, []):
                    for store in (STORE, plain_store):
                        message = render(
                            flow,
                            {**customer, "locale": locale},
                            trigger,
                            coupon,
                            store=store,
                            recommendations=recommendations,
                        )
                        case = f"{customer_name}/{trigger_name}/{coupon is not None}/{store.brand.logo_url}"
                        for part in (message.subject, message.text, visible(message.html)):
                            assert_clean(part)
                            if locale != "en":
                                words = ENGLISH.findall(
                                    re.sub(
                                        r"https?://\S+|\S+@\S+|CART-\w+",
                                        " ",
                                        part.replace("Kopi Nusantara", ""),
                                    )
                                )
                                # The legal footer is the store's own text (English for some languages).
                                words = [w for w in words if w != "Ltd"]
                                assert not words, (case, part)
                        assert f'<html lang="{locale}">' in message.html, case
                        assert "\n\n\n" not in message.text


@pytest.mark.parametrize("locale", LOCALES)
def test_each_language_greets_by_name_and_falls_back_without_one(locale: str) -> None:
    named = render("welcome", {"first_name": "Dewi", "locale": locale}, {}, None)
    anonymous = render("welcome", {"locale": locale}, {}, None)
    assert "Dewi" in named.subject
    assert "Dewi" in named.text.splitlines()[0]
    assert "Dewi" not in anonymous.text
    assert named.text.splitlines()[0] != anonymous.text.splitlines()[0]


@pytest.mark.parametrize(
    ("locale", "greeting", "offer", "expiry"),
    [
        ("en-GB", "Hi Dewi,", "10% off", "1 December 2026"),
        ("id-ID", "Halo Dewi,", "diskon 10%", "1 Desember 2026"),
        ("ms-MY", "Hai Dewi,", "diskaun 10%", "1 Disember 2026"),
        ("tr-TR", "Merhaba Dewi,", "%10 indirim", "1 Aralık 2026"),
        ("de-AT", "Hallo Dewi,", "10\xa0% Rabatt", "1. Dezember 2026"),
        ("fr-FR", "Bonjour Dewi,", "10\xa0% de réduction", "1 décembre 2026"),
        ("es-ES", "¡Hola, Dewi!", "un 10\xa0% de descuento", "1 de diciembre de 2026"),
    ],
)
def test_offer_and_dates_in_the_customers_language(
    locale: str, greeting: str, offer: str, expiry: str
) -> None:
    message = render("abandoned_cart", {"first_name": "Dewi", "locale": locale}, RICH_TRIGGER, COUPON)
    assert message.text.startswith(greeting)
    assert offer in message.subject
    assert offer in message.text
    assert expiry in message.text
    assert "CART-ABCDEFGHJKMN" in message.text
    assert "CART-ABCDEFGHJKMN" in message.html


def test_locale_choice_region_then_language_then_store_then_english() -> None:
    assert RENDERER.locale_for("welcome", "id-ID") == "id"
    assert RENDERER.locale_for("welcome", "de_CH") == "de"
    assert RENDERER.locale_for("welcome", "nl-NL") == "en"
    assert RENDERER.locale_for("welcome", None) == "en"
    malay_store = RENDERER.templates_for(None)
    from services.notifier.adapters.templates import TemplateSet

    store_default = TemplateSet(malay_store.sources, {k: k for k in malay_store.sources}, "ms-MY")
    assert store_default.locale_for("welcome", "nl-NL") == "ms"
    assert store_default.locale_for("welcome", "tr-TR") == "tr"


def test_rich_data_personalises_subject_greeting_and_body_and_escapes_html() -> None:
    message = render("vip", {**RICH_CUSTOMER, "locale": "en-GB"}, RICH_TRIGGER, COUPON)
    assert "Zoë <b>" in message.subject
    assert message.text.startswith("Hi Zoë <b>,")
    assert "Hi Zoë &lt;b&gt;," in message.html
    assert "<b>," not in message.html
    assert "Torstraße 1" in message.text  # the nearest shop, by city
    assert "Free delivery in Germany" in message.html  # the local offer, by country
    assert "https://notify.example/u/tok" in message.text


def test_brand_settings_reach_every_part() -> None:
    message = render("welcome", {"first_name": "Dewi", "locale": "de"}, {}, None)
    assert 'src="https://shop.example/logo.png"' in message.html
    assert 'alt="Kopi Nusantara"' in message.html  # images carry alt text
    assert "Jl. Braga 10, Bandung 40111" in message.text
    assert "Jl. Braga 10, Bandung 40111" in message.html
    assert "Kopi Nusantara GmbH" in message.text  # the legal footer in the email's language
    assert "#aa3300" in message.html


def test_css_is_inlined_and_the_layout_fits_a_phone() -> None:
    message = render("abandoned_cart", {"first_name": "Dewi", "locale": "en"}, RICH_TRIGGER, COUPON)
    button = re.search(r'<p class="button"[^>]*><a href="[^"]+" style="([^"]+)"', message.html)
    assert button is not None
    assert "background-color: #aa3300" in button.group(1)
    assert 'name="viewport"' in message.html
    assert "max-width: 600px" in message.html
    assert "@media only screen and (max-width: 620px)" in message.html  # kept for clients that read it


def test_text_part_says_what_the_html_says() -> None:
    message = render("follow_up", {**RICH_CUSTOMER, "locale": "fr"}, RICH_TRIGGER, COUPON)
    seen = re.sub(r"[ \t\n]+", " ", visible(message.html))
    for line in message.text.splitlines():
        words = re.sub(r"https?://\S+", "", line).strip(" -:\xa0")
        if words and not words.startswith("--"):
            first = words.split(":")[0].split("(")[0].strip()
            assert first in seen, first


def test_store_credit_needs_no_code() -> None:
    credit = Coupon("BACK-ABCDEFGHJKMN", CouponKind("cashback"), Decimal(5), "EUR", EXPIRY)
    with_code = render("follow_up", {"first_name": "Dewi", "locale": "en"}, RICH_TRIGGER, credit)
    assert "BACK-ABCDEFGHJKMN" in with_code.text
    data = data_for("follow_up", STORE, {"locale": "de"}, RICH_TRIGGER, credit, [], None, "de")
    data["coupon"] = {**data["coupon"], "kind": "store_credit"}
    as_credit = RENDERER.render("follow_up", "de", data)
    assert "BACK-ABCDEFGHJKMN" not in as_credit.text
    assert "gutgeschrieben" in as_credit.text


def test_money_in_the_customers_locale_and_the_orders_currency() -> None:
    text = render("follow_up", RICH_CUSTOMER, RICH_TRIGGER, COUPON).text.replace("\xa0", " ")
    assert "18,00 €" in text
    assert "34,50 €" in text
    english = render(
        "follow_up", {**RICH_CUSTOMER, "locale": "en-US"}, {**RICH_TRIGGER, "currency": None}, None
    )
    assert "$18.00" in english.text


def test_nearest_location_by_city_then_country() -> None:
    locations = RULES.locations
    assert nearest_location(locations, "hamburg", "Germany") == locations[2]
    assert nearest_location(locations, "Munich", "Germany") == locations[1]
    assert nearest_location(locations, "Lyon", "France") is None
    assert nearest_location((Location(name="x"),), None, None) is None


def test_flows_get_only_their_own_data() -> None:
    welcome = data_for("welcome", STORE, RICH_CUSTOMER, RICH_TRIGGER, None, RECOMMENDED, None, "en")
    assert "items" not in welcome
    assert "recovery_url" not in welcome
    assert "recommendations" not in welcome
    cart = data_for("abandoned_cart", STORE, RICH_CUSTOMER, RICH_TRIGGER, None, [], None, "en")
    assert {"items", "total", "recovery_url"} <= cart.keys()
    assert set(FLOW_DATA) == set(EMAIL_FLOWS)
    # The sender asks the segmenter for recommendations exactly for the flows whose templates get them.
    assert {f for f, names in FLOW_DATA.items() if "recommendations" in names} == set(RECOMMENDING_FLOWS)

"""Every flow's templates with rich and with missing data: names, places, money, offers, never "None"."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.domain.flows import RECOMMENDING_FLOWS
from services.notifier.domain.personalisation import Coupon, Product, StoreFacts, context, nearest_location
from shared.notifier_rules import CouponKind, FlowName, Location, NotifierRules

RULES = NotifierRules.model_validate(
    {
        "site_url": "https://shop.example",
        "community_url": "https://shop.example/community",
        "locations": [
            {"name": "Berlin Mitte", "city": "Berlin", "country": "Germany", "address": "Torstraße 1"},
            {"name": "Hamburg Hafen", "city": "Hamburg", "country": "Germany"},
        ],
        "local_offers": {"germany": "Free delivery in Germany over €40."},
    }
)
STORE = StoreFacts("demo", "Demo Store", "USD", RULES)
EMAIL_FLOWS = [f.value for f in FlowName if f != FlowName.SUPPORT_ALERT]
RICH_CUSTOMER = {
    "first_name": "Zoë <b>",
    "city": "Berlin",
    "country": "Germany",
    "locale": "de-DE",
    "orders_count": 3,
    "stage": "loyal",
    "last_products": [{"product_id": "p1", "title": "Everyday Mug"}],
}
RICH_TRIGGER = {
    "type": "order_placed",
    "items": [{"product_id": "p1", "title": "Everyday Mug", "quantity": 2, "price": "18.00"}],
    "total": "36.00",
    "currency": "EUR",
    "recovery_url": "https://shop.example/cart/k1",
    "csat": 1,
}
COUPON = Coupon("CART-ABCDEFGHJKMN", CouponKind.PERCENT, Decimal(10), None, datetime(2026, 12, 1, tzinfo=UTC))


def render(flow: str, customer: dict[str, Any], trigger: dict[str, Any], coupon: Coupon | None) -> Any:
    ctx = context(
        flow=flow,
        store=STORE,
        customer=customer,
        trigger=trigger,
        coupon=coupon,
        recommendations=[Product("p2", "Coffee Beans 1kg", Decimal("34.50"))] if customer else [],
        unsubscribe_url="https://notify.example/u/tok",
    )
    return TemplateRenderer().render(flow, customer.get("locale"), ctx)


@pytest.mark.parametrize("flow", EMAIL_FLOWS)
def test_rich_data_personalises_subject_greeting_and_body(flow: str) -> None:
    message = render(flow, {**RICH_CUSTOMER, "locale": "en-GB"}, RICH_TRIGGER, COUPON)
    assert "Zoë <b>" in message.subject
    assert message.text.startswith("Hi Zoë <b>,")
    assert "Hi Zoë &lt;b&gt;," in message.html
    assert "<b>," not in message.html
    assert "Torstraße 1" in message.text  # the nearest shop, by city
    assert "Free delivery in Germany" in message.html  # the local offer, by country
    assert "https://notify.example/u/tok" in message.text


@pytest.mark.parametrize("flow", EMAIL_FLOWS)
def test_missing_data_never_renders_blank_or_none(flow: str) -> None:
    message = render(flow, {}, {}, None)
    for part in (message.subject, message.text, message.html):
        assert "None" not in part
        assert "nil" not in part
        assert not re.search(r"\s[,.!:]", part.replace("\n", " ")), part
    assert message.text.startswith("Hi there,")
    assert "\n\n\n" not in message.text


def test_money_in_the_customers_locale_and_the_orders_currency() -> None:
    text = render("follow_up", RICH_CUSTOMER, RICH_TRIGGER, COUPON).text.replace("\xa0", " ")  # CLDR's nbsp
    assert "18,00 €" in text
    assert "34,50 €" in text
    english = render(
        "follow_up", {**RICH_CUSTOMER, "locale": "en-US"}, {**RICH_TRIGGER, "currency": None}, None
    )
    assert "$18.00" in english.text


def test_coupon_code_terms_and_expiry_are_shown() -> None:
    message = render("abandoned_cart", RICH_CUSTOMER, RICH_TRIGGER, COUPON)
    assert "CART-ABCDEFGHJKMN" in message.text
    assert "10% off" in message.subject
    assert "December 1, 2026" in message.text
    assert "https://shop.example/cart/k1?utm_source=loyalty-funnel" in message.text


def test_nearest_location_by_city_then_country() -> None:
    locations = RULES.locations
    assert nearest_location(locations, "hamburg", "Germany") == locations[1]
    assert nearest_location(locations, "Munich", "Germany") == locations[0]
    assert nearest_location(locations, "Lyon", "France") is None
    assert nearest_location((Location(name="x"),), None, None) is None


def test_a_locale_with_its_own_templates_uses_them_and_others_fall_back_to_english() -> None:
    german = render("welcome", RICH_CUSTOMER, RICH_TRIGGER, None)
    assert german.subject == "Danke für Ihre Bestellung, Zoë <b>!"
    assert "Torstraße 1" in german.text
    assert '<html lang="de">' in german.html
    french = render("welcome", {**RICH_CUSTOMER, "locale": "fr-FR"}, RICH_TRIGGER, None)
    assert french.subject.startswith("Thank")
    assert render("welcome", {"locale": "de-AT"}, {}, None).text.startswith("Hallo,")


def test_only_the_recommending_flows_templates_show_recommendations() -> None:
    english = {**RICH_CUSTOMER, "locale": "en-GB"}
    for flow in EMAIL_FLOWS:
        shows = "Coffee Beans 1kg" in render(flow, english, RICH_TRIGGER, None).text
        assert shows is (flow in RECOMMENDING_FLOWS), flow

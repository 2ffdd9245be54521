"""Whatever a shopper types at a checkout or in their account, the platform's signed webhook is accepted,
and the segmenter decides it and the notifier sends what that announces: a property, through ingest's real
Shopify and WooCommerce routes and the rest of the way (tests/integration/accepted_pipeline.py).

Each example is a history of up to 6 webhooks of one store's two platforms (orders, cancellations, refunds,
deleted or trashed orders, checkouts, customers; WooCommerce orders in every status, with the refunds they
list), made from the documented examples in shared/examples/sources with what a shopper controls replaced:
names, phone, city and email as typed (any text, a NUL, CR/LF with a header after it, hundreds of characters),
quantities in the millions (a product whose stock is not managed), product titles, SKUs and coupon codes of
any length, and amounts as the platform writes them up to 10^13. Customer, order and cart ids repeat between
webhooks so that profiles, orders and carts meet; an order may name nobody (a point-of-sale sale).

Every webhook must be answered 200: a refused one is only resent and counted against the webhook, which
WooCommerce disables after 5 failures in a row and Shopify deletes after 8 (sources/fitting.py). Whatever was
accepted must be decided, its timers fired, every event recorded as processed, and no message failed.
Before round 20, the derandomized examples found 422s for long names, phones and quantities, for invalid
emails, for NULs and for orders naming nobody.

WEBHOOK_PROPERTY_EXAMPLES sets the number of examples (default 60, about 20 s); they are the same on every
run (derandomized) so that `make test` is repeatable; WEBHOOK_PROPERTY_RANDOM=1 searches for new ones."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.examples import source_example
from tests.fixtures.stack import SmtpServer
from tests.integration.accepted_pipeline import (
    KeepingPublisher,
    decide_and_send,
    keeping_ingest,
    property_settings,
)
from tests.webhooks import signed_shopify, signed_woocommerce

pytestmark = pytest.mark.integration

# A week after the examples' dates (2026-11-10 to 11-22).
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
EXAMPLES = int(os.environ.get("WEBHOOK_PROPERTY_EXAMPLES", "60"))
RANDOM = os.environ.get("WEBHOOK_PROPERTY_RANDOM") == "1"

# What a shopper types into a text field.
TYPED = st.one_of(
    st.sampled_from(["Ann", "Zoë", "名前", "  ", "", "A\x00nn", "Ann\r\nBcc: eve@evil.example", "<b>Bo</b>"]),
    st.text(max_size=12),
    st.integers(min_value=200, max_value=1600).map(lambda n: "y" * n),
)
PHONES = st.one_of(
    st.sampled_from(["+33 6 12 34 56 78", "555-555-SHIP", ""]),
    st.text(alphabet="0123456789 +-/().", max_size=60),
)
# As typed, and the placeholder WordPress writes into an order it anonymises (woocommerce.ANONYMISED_EMAIL).
EMAILS = st.sampled_from(
    ["ann@example.com", "bo@example.com", "Ann@Example.com ", "", "not an email", "x@@y", "zoë@exämple.com",
     "ann@example.com\r\nBcc: eve@evil.example", "ann\x00@example.com", "a" * 330 + "@example.com",
     "deleted@site.invalid"]
)  # fmt: skip
QUANTITIES = st.one_of(st.integers(min_value=1, max_value=3), st.integers(min_value=1, max_value=3_000_000))
# As each platform writes money: Shopify strings of two decimals; WooCommerce strings of the store's decimals
# (two or three) and line prices as JSON numbers.
SHOPIFY_MONEY = st.decimals(min_value=0, max_value=10**13, places=2).map(str)
WOO_MONEY = st.one_of(
    st.decimals(min_value=0, max_value=10**13, places=2).map(str),
    st.decimals(min_value=0, max_value=10**6, places=3).map(str),
)
CODES = st.lists(TYPED, max_size=2)
SHOPIFY_CUSTOMERS = st.sampled_from([115310627314723954, 706405506930370084])
SHOPIFY_ORDERS = st.sampled_from([820982911946154508, 820982911946154509])
WOO_CUSTOMERS = st.sampled_from([0, 17, 18])
WOO_ORDERS = st.sampled_from([4821, 4822])


def _shopify_customer(draw: st.DrawFn, customer: dict[str, Any]) -> dict[str, Any]:
    customer = {
        **customer,
        "id": draw(SHOPIFY_CUSTOMERS),
        "email": draw(EMAILS),
        "first_name": draw(TYPED),
        "last_name": draw(TYPED),
        "phone": draw(PHONES | st.none()),
    }
    customer["default_address"] = {**(customer.get("default_address") or {}), "city": draw(TYPED)}
    return customer


def _shopify_lines(draw: st.DrawFn, template: dict[str, Any], *, edits: bool = False) -> list[dict[str, Any]]:
    lines = []
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        quantity = draw(QUANTITIES)
        line = {**template, "title": draw(TYPED), "sku": draw(TYPED), "quantity": quantity}
        line["price"] = draw(SHOPIFY_MONEY)
        # An order's line as an edit (or a refund) left it: from none of its units to all of them.
        if edits and draw(st.booleans()):
            line["current_quantity"] = draw(st.integers(min_value=0, max_value=quantity))
        lines.append(line)
    return lines


@st.composite
def shopify_order(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    topic = draw(st.sampled_from(["orders/create", "orders/updated", "orders/cancelled"]))
    name = (
        "orders.cancelled__cancelled_order"
        if topic == "orders/cancelled"
        else "orders.create__order_with_customer"
    )
    order = source_example("shopify", name)
    order.update(
        id=draw(SHOPIFY_ORDERS),
        email=draw(EMAILS | st.none()),
        total_price=draw(SHOPIFY_MONEY),
        cart_token=draw(TYPED | st.none()),
        discount_codes=[{"code": c, "amount": "1.00", "type": "fixed_amount"} for c in draw(CODES)],
    )
    order["line_items"] = _shopify_lines(draw, order["line_items"][0], edits=True)
    # A point-of-sale sale names no customer.
    order["customer"] = _shopify_customer(draw, order["customer"]) if draw(st.booleans()) else None
    return "shopify", topic, order


@st.composite
def shopify_checkout(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    checkout = source_example("shopify", "checkouts.create__abandoned_checkout")
    checkout.update(
        token=draw(st.sampled_from(["123123123", "456456456"])),
        email=draw(EMAILS | st.none()),
        total_price=draw(SHOPIFY_MONEY),
        buyer_accepts_marketing=draw(st.booleans()),
    )
    checkout["billing_address"] = {
        **checkout["billing_address"],
        "first_name": draw(TYPED),
        "city": draw(TYPED),
    }
    checkout["line_items"] = _shopify_lines(draw, checkout["line_items"][0])
    return "shopify", draw(st.sampled_from(["checkouts/create", "checkouts/update"])), checkout


@st.composite
def shopify_customer(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    customer = _shopify_customer(draw, source_example("shopify", "customers.update__consent_given"))
    return "shopify", draw(st.sampled_from(["customers/create", "customers/update"])), customer


@st.composite
def shopify_refund(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    refund = source_example("shopify", "refunds.create__partial_refund")
    refund["order_id"] = draw(SHOPIFY_ORDERS)
    refund["transactions"] = [{**refund["transactions"][0], "amount": draw(SHOPIFY_MONEY)}]
    return "shopify", "refunds/create", refund


def _woo_address(draw: st.DrawFn, address: dict[str, Any]) -> dict[str, Any]:
    return {
        **address,
        "first_name": draw(TYPED),
        "last_name": draw(TYPED),
        "city": draw(TYPED),
        "phone": draw(PHONES),
        **({"email": draw(EMAILS)} if "email" in address else {}),
    }


@st.composite
def woo_order(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    order = source_example("woocommerce", "order.created__processing")
    order.update(
        id=draw(WOO_ORDERS),
        status=draw(
            st.sampled_from(
                ["processing", "on-hold", "completed", "pending", "failed", "cancelled", "refunded"]
            )
        ),
        customer_id=draw(WOO_CUSTOMERS),
        total=draw(WOO_MONEY),
        cart_hash=draw(TYPED),
        coupon_lines=[{"id": i, "code": c} for i, c in enumerate(draw(CODES))],
        # The refunds so far, each amount negated as the REST API writes it; an admin types the reason.
        refunds=[
            {"id": refund_id, "reason": draw(TYPED), "total": f"-{draw(WOO_MONEY)}"}
            for refund_id in draw(st.lists(st.sampled_from([4901, 4902, 4903]), max_size=2, unique=True))
        ],
    )
    order["billing"] = _woo_address(draw, order["billing"])
    template = order["line_items"][0]
    order["line_items"] = [
        {
            **template,
            "name": draw(TYPED),
            "sku": draw(TYPED),
            "quantity": draw(QUANTITIES),
            "price": float(draw(WOO_MONEY)),
            "total": draw(WOO_MONEY),
        }
        for _ in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    return "woocommerce", draw(st.sampled_from(["order.created", "order.updated"])), order


@st.composite
def woo_customer(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    customer = source_example("woocommerce", "customer.updated__address_changed")
    customer.update(id=draw(WOO_CUSTOMERS.filter(bool)), email=draw(EMAILS), first_name=draw(TYPED))
    customer["billing"] = _woo_address(draw, customer["billing"])
    return "woocommerce", "customer.updated", customer


@st.composite
def deleted_order(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    """Shopify's orders/delete or WooCommerce's order.deleted (an order moved to the trash): the id alone, of
    an order the history may or may not hold (yet)."""
    if draw(st.booleans()):
        return "shopify", "orders/delete", {"id": draw(SHOPIFY_ORDERS)}
    return "woocommerce", "order.deleted", {"id": draw(WOO_ORDERS)}


HISTORIES = st.lists(
    st.one_of(
        shopify_order(),
        shopify_checkout(),
        shopify_customer(),
        shopify_refund(),
        woo_order(),
        woo_customer(),
        deleted_order(),
    ),
    min_size=1,
    max_size=6,
)


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[httpx.AsyncClient, KeepingPublisher]]:
    async with keeping_ingest(NOW) as running:
        yield running


@property_settings(EXAMPLES, RANDOM)
@given(history=HISTORIES)
async def test_what_a_shopper_types_never_refuses_a_webhook_and_is_decided(
    history: list[tuple[str, str, dict[str, Any]]],
    engine: AsyncEngine,
    ingest: tuple[httpx.AsyncClient, KeepingPublisher],
    smtp_server: SmtpServer,
) -> None:
    client, publisher = ingest
    publisher.values.clear()
    for platform, topic, payload in history:
        body = json.dumps(payload).encode()
        sign = signed_shopify if platform == "shopify" else signed_woocommerce
        path, headers = sign(body, topic, uuid.uuid4().hex)
        note(f"{platform} {topic} {body[:600]!r}")
        response = await client.post(path, content=body, headers=headers)
        note(f"-> {response.status_code} {response.text[:300]}")
        assert response.status_code == 200, response.text
    await decide_and_send(publisher.values, engine, smtp_server, NOW)

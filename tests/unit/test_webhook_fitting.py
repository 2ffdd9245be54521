"""A signed webhook is never refused for what a shopper typed (services/ingest/sources/fitting.py).

Through ingest's real routes, on a publisher that keeps what Kafka would get: each Shopify or WooCommerce
webhook here carries one value the canonical event cannot hold as it is (a 300-character name, a phone
number of 45 characters, a quantity of two million, an address that is not one, a NUL). Before round 20
each was a 422, which the platform retries and counts against the webhook: WooCommerce disables one after
5 consecutive failures, Shopify deletes a subscription after 8. Now each is accepted, with the value made
to fit, and every other field as it was.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from services.ingest.sources import fitting
from shared.events import (
    MOST_MONEY,
    MOST_QUANTITY,
    PHONE_LENGTH,
    SHORT_TEXT_LENGTH,
    TITLE_LENGTH,
    URL_LENGTH,
    CartUpdated,
    CartUpdatedEvent,
    Customer,
    CustomerUpsertedEvent,
    LineItem,
    OrderPlaced,
    OrderPlacedEvent,
)
from shared.settings import REPO_ROOT
from tests.examples import source_example
from tests.unit.test_ingest_api import FakePublisher
from tests.webhooks import signed_shopify, signed_woocommerce

Change = Callable[[dict[str, Any]], None]
Check = Callable[[Any], bool]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        IngestSettings(stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml"), publisher=publisher
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            yield http


async def _post_shopify(client: httpx.AsyncClient, topic: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    path, headers = signed_shopify(body, topic)
    return await client.post(path, content=body, headers=headers)


async def _post_woo(client: httpx.AsyncClient, topic: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    path, headers = signed_woocommerce(body, topic)
    return await client.post(path, content=body, headers=headers)


def _set(*path: str | int, value: Any) -> Change:
    def change(payload: dict[str, Any]) -> None:
        node: Any = payload
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


# -- the limits are the canonical models' -----------------------------------------------------------------


def _holds(model: type[BaseModel], values: dict[str, Any]) -> bool:
    try:
        model.model_validate(values)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("model", "field", "limit", "base"),
    [
        (Customer, "first_name", SHORT_TEXT_LENGTH, {"email": "a@example.com"}),
        (Customer, "city", SHORT_TEXT_LENGTH, {"email": "a@example.com"}),
        (Customer, "phone", PHONE_LENGTH, {"email": "a@example.com"}),
        (LineItem, "sku", SHORT_TEXT_LENGTH, {"product_id": "p"}),
        (LineItem, "title", TITLE_LENGTH, {"product_id": "p"}),
        (OrderPlaced, "cart_id", SHORT_TEXT_LENGTH, {"order_id": "o", "total": "1", "currency": "EUR"}),
        (CartUpdated, "recovery_url", URL_LENGTH, {"cart_id": "k", "currency": "EUR"}),
    ],
)
def test_each_text_limit_is_the_canonical_fields(
    model: type[BaseModel], field: str, limit: int, base: dict[str, Any]
) -> None:
    assert _holds(model, {**base, field: "x" * limit})
    assert not _holds(model, {**base, field: "x" * (limit + 1)})


def test_the_largest_quantity_and_amount_are_the_canonical_ones() -> None:
    assert _holds(LineItem, {"product_id": "p", "quantity": MOST_QUANTITY, "price": MOST_MONEY})
    assert not _holds(LineItem, {"product_id": "p", "quantity": MOST_QUANTITY + 1})
    assert not _holds(LineItem, {"product_id": "p", "price": MOST_MONEY + fitting.CENT})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("19.99"), "19.99"),
        (Decimal("1.5"), "1.5"),  # already whole cents: as it was
        (Decimal("12.345"), "12.35"),
        (Decimal("0.004"), "0.00"),
        (Decimal("1E+13"), "999999999999.99"),
        (Decimal("1E+400"), "999999999999.99"),
    ],
)
def test_money_is_capped_and_rounded_to_the_cent(value: Decimal, expected: str) -> None:
    assert str(fitting.money(value)) == expected


# -- Shopify ------------------------------------------------------------------------------------------------

SHOPIFY_ORDER: list[tuple[str, Change, Check]] = [
    (
        "a first name of 300 characters is cut to 255",
        _set("customer", "first_name", value="Ann" + "n" * 297),
        lambda e: e.customer.first_name == "Ann" + "n" * 252,
    ),
    (
        "a city of 300 characters is cut to 255",
        _set("customer", "default_address", "city", value="C" * 300),
        lambda e: e.customer.city == "C" * 255,
    ),
    (
        "a product title of 1,500 characters is cut to 1,000",
        _set("line_items", 0, "title", value="T" * 1500),
        lambda e: e.payload.line_items[0].title == "T" * 1000,
    ),
    (
        "an SKU of 300 characters is cut to 255",
        _set("line_items", 0, "sku", value="S" * 300),
        lambda e: e.payload.line_items[0].sku == "S" * 255,
    ),
    (
        "a quantity of two million is a million",
        _set("line_items", 0, "quantity", value=2_000_000),
        lambda e: e.payload.line_items[0].quantity == 1_000_000,
    ),
    (
        "a total beyond the contract is its largest",
        _set("total_price", value="10000000000000.00"),
        lambda e: e.payload.total == MOST_MONEY,
    ),
    (
        "a price in fractions of a cent is rounded to the cent",
        _set("line_items", 0, "price", value="19.995"),
        lambda e: e.payload.line_items[0].price == Decimal("20.00"),
    ),
    (
        "a phone number of 50 characters is left out",
        _set("customer", "phone", value="+1" + "2" * 48),
        lambda e: e.customer.phone is None and e.customer.store_customer_id is not None,
    ),
    (
        "a discount code of 300 characters is cut to 255",
        _set("discount_codes", value=[{"code": "D" * 300, "amount": "1.00", "type": "fixed_amount"}]),
        lambda e: e.payload.discount_codes == ("D" * 255,),
    ),
    (
        "an order email that is not one address is left out, the customer's own kept",
        _set("email", value="ann@example.com\r\nBcc: eve@example.net"),
        lambda e: e.customer.email is not None and "\n" not in e.customer.email,
    ),
    (
        "a customer email that is not one address is left out",
        _set("customer", "email", value="x@@y"),
        lambda e: e.customer.email != "x@@y" and e.customer.store_customer_id is not None,
    ),
    (
        "a locale that is not a language tag is left out",
        _set("customer_locale", value="en_US.UTF-8@euro"),
        lambda e: e.customer.locale != "en_US.UTF-8@euro",
    ),
    (
        "a cart token of 300 characters is cut to 255",
        _set("cart_token", value="k" * 300),
        lambda e: e.payload.cart_id == "k" * 255,
    ),
]


@pytest.mark.parametrize(
    ("change", "check"), [(c, k) for _, c, k in SHOPIFY_ORDER], ids=[n for n, *_ in SHOPIFY_ORDER]
)
async def test_a_shopify_order_with_a_value_that_does_not_fit_is_kept_with_it_fitted(
    client: httpx.AsyncClient, publisher: FakePublisher, change: Change, check: Check
) -> None:
    example = source_example("shopify", "orders.create__order_with_customer")
    payload = copy.deepcopy(example)
    change(payload)
    response = await _post_shopify(client, "orders/create", payload)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    [event] = publisher.published
    assert isinstance(event, OrderPlacedEvent)
    assert check(event), event
    # Everything else as the order says it.
    assert event.payload.order_id == str(example["id"])
    assert event.customer.store_customer_id == str(example["customer"]["id"])


async def test_a_shopify_checkout_with_a_recovery_link_too_long_to_hold_is_kept_without_it(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    payload = source_example("shopify", "checkouts.create__abandoned_checkout")
    payload["abandoned_checkout_url"] = "https://demo.myshopify.com/recover?key=" + "k" * 2000
    response = await _post_shopify(client, "checkouts/create", payload)
    assert response.status_code == 200, response.text
    [event] = publisher.published
    assert isinstance(event, CartUpdatedEvent)
    assert event.payload.recovery_url is None
    assert event.payload.cart_id == payload["token"]


async def test_a_point_of_sale_order_naming_nobody_is_acknowledged_not_published(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["customer"] = None
    payload["email"] = None
    response = await _post_shopify(client, "orders/create", payload)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    assert publisher.published == []


# -- WooCommerce --------------------------------------------------------------------------------------------

WOO_ORDER: list[tuple[str, Change, Check]] = [
    (
        "a billing first name of 300 characters is cut to 255",
        _set("billing", "first_name", value="F" * 300),
        lambda e: e.customer.first_name == "F" * 255,
    ),
    (
        "a billing phone of 45 characters is left out",
        _set("billing", "phone", value="+33 6 12 34 56 78 / +33 1 23 45 67 89 / 01 23"),
        lambda e: e.customer.phone is None,
    ),
    (
        "a billing city of 300 characters is cut to 255",
        _set("billing", "city", value="C" * 300),
        lambda e: e.customer.city == "C" * 255,
    ),
    (
        "a product name of 1,200 characters is cut to 1,000",
        _set("line_items", 0, "name", value="N" * 1200),
        lambda e: e.payload.line_items[0].title == "N" * 1000,
    ),
    (
        "an SKU of 300 characters is cut to 255",
        _set("line_items", 0, "sku", value="S" * 300),
        lambda e: e.payload.line_items[0].sku == "S" * 255,
    ),
    (
        "a coupon code of 300 characters is cut to 255",
        _set("coupon_lines", value=[{"id": 1, "code": "c" * 300}]),
        lambda e: e.payload.discount_codes == ("c" * 255,),
    ),
    (
        "a quantity of two million (stock not managed) is a million",
        _set("line_items", 0, "quantity", value=2_000_000),
        lambda e: e.payload.line_items[0].quantity == 1_000_000,
    ),
    (
        "a total beyond the contract is its largest",
        _set("total", value="1000000000000.01"),
        lambda e: e.payload.total == MOST_MONEY,
    ),
    (
        "a NUL typed in the middle of a name is removed",
        _set("billing", "first_name", value="Cam\x00ille"),
        lambda e: e.customer.first_name == "Camille",
    ),
    (
        "a cart hash of 300 characters is cut to 255",
        _set("cart_hash", value="h" * 300),
        lambda e: e.payload.cart_id == "h" * 255,
    ),
]


@pytest.mark.parametrize(
    ("change", "check"), [(c, k) for _, c, k in WOO_ORDER], ids=[n for n, *_ in WOO_ORDER]
)
@pytest.mark.parametrize("status", ["processing", "on-hold"])
async def test_a_woocommerce_order_with_a_value_that_does_not_fit_is_kept_with_it_fitted(
    client: httpx.AsyncClient, publisher: FakePublisher, change: Change, check: Check, status: str
) -> None:
    # on-hold: a bank transfer or cash on delivery, placed without paying anything.
    example = source_example("woocommerce", "order.created__processing")
    payload = copy.deepcopy(example)
    payload["status"] = status
    change(payload)
    response = await _post_woo(client, "order.created", payload)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    [event] = publisher.published
    assert isinstance(event, OrderPlacedEvent)
    assert check(event), event
    assert event.payload.order_id == str(example["id"])
    assert event.customer.store_customer_id == str(example["customer_id"])


async def test_a_woocommerce_customer_whose_name_does_not_fit_is_kept_with_it_cut(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # Anyone can open an account and type this into their profile: each save is a customer.updated.
    payload = source_example("woocommerce", "customer.created__checkout_signup")
    payload["first_name"] = "F" * 300
    payload["billing"]["phone"] = "1" * 60
    response = await _post_woo(client, "customer.updated", payload)
    assert response.status_code == 200, response.text
    [event] = publisher.published
    assert isinstance(event, CustomerUpsertedEvent)
    assert (event.customer.first_name, event.customer.phone) == ("F" * 255, None)


@pytest.mark.parametrize("status", ["pending", "failed", "checkout-draft", "wc-pending"])
async def test_an_unpaid_woocommerce_order_is_acknowledged_whatever_it_holds(
    client: httpx.AsyncClient, publisher: FakePublisher, status: str
) -> None:
    payload = source_example("woocommerce", "order.created__processing")
    payload["status"] = status
    payload["line_items"][0]["quantity"] = 0
    payload["date_created_gmt"] = "not a date"
    response = await _post_woo(client, "order.created", payload)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    assert publisher.published == []


async def test_a_woocommerce_order_without_a_status_is_still_refused_naming_it(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    payload = source_example("woocommerce", "order.created__processing")
    del payload["status"]
    response = await _post_woo(client, "order.created", payload)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["status"]
    assert publisher.published == []

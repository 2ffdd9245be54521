"""Shopify's order, checkout, refund and customer webhooks read by hand: shopify.to_canonical's fast path.

Validating a webhook through the pydantic payload models, then building the canonical event through the
canonical models (validated again), was a third of ingest's CPU per webhook. This reader takes the payload
as Shopify sends it (JSON integers for ids, strings for money and times, ISO 8601 times with an offset) and
builds the canonical event without validating it again (sources.construct), checking on the way every
field the payload model and the canonical models would check. Anything else (another type, a money or
time format it does not know, a value a model would refuse or one that must be made to fit) raises
`Unusual`, and the caller maps the payload through the pydantic models: they accept it (the same event, or
with its values made to fit: sources/fitting.py), acknowledge it without one, or name the field in the 422.
Pure: no I/O, no clock.

Only for bodies known to hold no NUL and no lone surrogate (sources.base.Checked): the models' checks for
them are not repeated here.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from services.ingest.sources.construct import Constructor
from services.ingest.sources.shopify_structs import DECODERS
from shared.events import (
    CartUpdated,
    CartUpdatedEvent,
    Customer,
    CustomerUpserted,
    CustomerUpsertedEvent,
    LineItem,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    Source,
    StorefrontEvent,
)
from shared.fields import email_address, language_tag

# The topics `read` knows; the privacy topics (rare) are left to the models.
TOPICS = frozenset(
    {
        "orders/create",
        "orders/updated",
        "orders/cancelled",
        "refunds/create",
        "checkouts/create",
        "checkouts/update",
        "customers/create",
        "customers/update",
    }
)
assert DECODERS.keys() == TOPICS  # read_body decodes each topic read knows, and no other


class Unusual(Exception):
    """The payload is not of the plain kind this reader knows: the pydantic models decide."""


_CUSTOMER = Constructor(Customer)
_LINE_ITEM = Constructor(LineItem)
_ORDER_PLACED = Constructor(OrderPlaced)
_ORDER_REFUNDED = Constructor(OrderRefunded)
_CART_UPDATED = Constructor(CartUpdated)
_CUSTOMER_UPSERTED = Constructor(CustomerUpserted)
_EVENTS: dict[str, Constructor[Any]] = {
    "order_placed": Constructor(OrderPlacedEvent),
    "order_refunded": Constructor(OrderRefundedEvent),
    "cart_updated": Constructor(CartUpdatedEvent),
    "customer_upserted": Constructor(CustomerUpsertedEvent),
}

_MISSING: Any = object()

# ISO 8601 with an offset, as Shopify writes every time: what both pydantic and datetime.fromisoformat read
# to the same instant and offset (anything else goes to pydantic).
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
# Money as Shopify writes it ("199.00"): within the canonical Money (at most 14 digits, 2 decimals).
_MONEY = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_STORE_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MONEY_CEILING = Decimal(10**12)


# -- the payload's values: exactly the plain JSON type, else Unusual ----------------------------------


def _str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or type(value) is str:
        return value
    raise Unusual


def _required_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if type(value) is str:
        return value
    raise Unusual


def _int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or type(value) is int:
        return value
    raise Unusual


def _required_int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if type(value) is int:
        return value
    raise Unusual


def _bool(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None or type(value) is bool:
        return value
    raise Unusual


def _time(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is str and _TIME.fullmatch(value):
        return datetime.fromisoformat(value)  # a ValueError (a 13th month) is Unusual to the caller
    raise Unusual


def _required_time(data: dict[str, Any], key: str) -> datetime:
    value = _time(data, key)
    if value is None:
        raise Unusual
    return value


def _money(data: dict[str, Any], key: str) -> Decimal:
    value = data.get(key)
    if type(value) is str and _MONEY.fullmatch(value):
        return Decimal(value)
    raise Unusual


def _currency(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if type(value) is str and _CURRENCY.fullmatch(value):
        return value
    raise Unusual


def _email(data: dict[str, Any], key: str) -> str | None:
    value = _str(data, key)
    if value is None or not value.strip():
        return None
    return email_address(value)  # its ValueError is Unusual to the caller


def _locale(data: dict[str, Any], key: str) -> str | None:
    value = _str(data, key)
    if value is None or not value.strip():
        return None
    return language_tag(value)


def _object(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None or type(value) is dict:
        return value
    raise Unusual


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        return []
    if type(value) is list:
        return value
    raise Unusual


def _text(value: str | None, limit: int) -> str | None:
    """A canonical optional text field of at most `limit` characters."""
    if value is not None and len(value) > limit:
        raise Unusual
    return value


def _short(value: str) -> str:
    """A canonical ShortText: 1 to 255 characters."""
    if not 0 < len(value) <= 255:
        raise Unusual
    return value


# -- the payload models, read --------------------------------------------------------------------------


def _address(data: dict[str, Any], key: str) -> tuple[str | None, str | None] | None:
    """(city, country) of a ShopifyAddress; a tuple, so an address is never falsy (as the model was not)."""
    address = _object(data, key)
    if address is None:
        return None
    _str(address, "country_code")
    return _str(address, "city"), _str(address, "country")


def _customer(
    data: dict[str, Any] | None,
    *,
    email: str | None,
    locale: str | None,
    address: tuple[str | None, str | None] | None,
) -> dict[str, Any]:
    """The canonical Customer's fields of a ShopifyCustomer (shopify._customer)."""
    if data is None:
        place = address
        if email is None:
            raise Unusual  # no identifier: the canonical model refuses it
        return {
            "email": email,
            "locale": locale,
            "city": _text(place[0], 255) if place else None,
            "country": _text(place[1], 255) if place else None,
        }
    customer_id = _required_int(data, "id")
    own_email = _email(data, "email")
    first_name = _str(data, "first_name")
    last_name = _str(data, "last_name")
    phone = _str(data, "phone")
    own_locale = _locale(data, "locale")
    _time(data, "created_at")
    updated_at = _time(data, "updated_at")
    accepts_marketing = _bool(data, "accepts_marketing")
    accepts_marketing_updated_at = _time(data, "accepts_marketing_updated_at")
    consent = _object(data, "email_marketing_consent")
    place = _address(data, "default_address") or address
    if consent is not None:
        state = _str(consent, "state")
        consent_updated_at = _time(consent, "consent_updated_at")
    else:
        state = consent_updated_at = None
    if state is not None:
        accepts: bool | None = state == "subscribed"
        consent_at = consent_updated_at or updated_at
    else:
        accepts = accepts_marketing
        consent_at = accepts_marketing_updated_at or updated_at
    return {
        "store_customer_id": _short(str(customer_id)),
        "email": own_email or email,
        "phone": _text(phone, 40),
        "first_name": _text(first_name, 255),
        "last_name": _text(last_name, 255),
        "locale": own_locale or locale,
        "city": _text(place[0], 255) if place else None,
        "country": _text(place[1], 255) if place else None,
        "accepts_marketing": accepts,
        "updated_at": updated_at,
        "consent_at": consent_at,
    }


def _line_items(data: dict[str, Any]) -> tuple[LineItem, ...]:
    items = []
    for item in _list(data, "line_items"):
        if type(item) is not dict:
            raise Unusual
        item_id = _int(item, "id")
        key = _str(item, "key")
        product_id = _int(item, "product_id")
        variant_id = _int(item, "variant_id")
        sku = _str(item, "sku")
        title = _str(item, "title")
        quantity = _required_int(item, "quantity")
        if not 1 <= quantity <= 1_000_000:
            raise Unusual
        price = _money(item, "price")
        # What an edit (or a refund) left of the line: shopify._line_items.
        current = _int(item, "current_quantity")
        if current is not None:
            if not 0 <= current <= 1_000_000:
                raise Unusual
            if current == 0:
                continue
            quantity = current
        items.append(
            _LINE_ITEM(
                product_id=_short(str(product_id) if product_id is not None else f"line:{item_id or key}"),
                variant_id=_short(str(variant_id)) if variant_id is not None else None,
                sku=_text(sku or None, 255),
                title=_text(title, 1000),
                quantity=quantity,
                price=price,
            )
        )
    return tuple(items)


def _order(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ShopifyOrder the events use, every other field of the model checked."""
    order: dict[str, Any] = {
        "id": _required_int(data, "id"),
        "email": _email(data, "email"),
        "created_at": _required_time(data, "created_at"),
        "updated_at": _time(data, "updated_at"),
        "cancelled_at": _time(data, "cancelled_at"),
        "currency": _currency(data, "currency"),
        "total_price": _money(data, "total_price"),
        "customer_locale": _locale(data, "customer_locale"),
        "cart_token": _str(data, "cart_token"),
        "checkout_token": _str(data, "checkout_token"),
        "line_items": _line_items(data),
    }
    codes: list[str] = []
    for code in _list(data, "discount_codes"):
        if type(code) is not dict:
            raise Unusual
        codes.append(_short(_required_str(code, "code")))
    order["discount_codes"] = tuple(codes)
    shipping = _address(data, "shipping_address")
    billing = _address(data, "billing_address")
    order["customer"] = _customer(
        _object(data, "customer"),
        email=order["email"],
        locale=order["customer_locale"],
        address=shipping or billing,
    )
    return order


# -- the events ------------------------------------------------------------------------------------------


def read(
    topic: str, payload: Any, *, store_id: str, event_id: str, received_at: datetime
) -> StorefrontEvent | None:
    """The event shopify.to_canonical makes of an order, checkout, refund or customer webhook.

    Raises Unusual (or ValueError, from a value a model would refuse) for anything the pydantic models
    must decide."""
    if (
        type(payload) is not dict
        or not 0 < len(event_id) <= 200
        or "\x00" in event_id
        or not (len(store_id) <= 64 and _STORE_ID.fullmatch(store_id))
        or received_at.utcoffset() is None
    ):
        raise Unusual
    common: dict[str, Any] = {
        "event_id": event_id,
        "store_id": store_id,
        "received_at": received_at,
        "source": Source.SHOPIFY,
    }
    if topic == "orders/create" or topic == "orders/updated":
        order = _order(payload)
        return _event(
            "order_placed",
            common,
            order["customer"],
            order["created_at"],
            _ORDER_PLACED(
                order_id=_short(str(order["id"])),
                total=order["total_price"],
                currency=order["currency"],
                line_items=order["line_items"],
                cart_id=_cart_id(order["cart_token"] or order["checkout_token"]),
                discount_codes=order["discount_codes"],
                updated_at=order["updated_at"],
            ),
        )
    if topic == "orders/cancelled":
        order = _order(payload)
        return _event(
            "order_refunded",
            common,
            order["customer"],
            order["cancelled_at"] or order["updated_at"] or received_at,
            _ORDER_REFUNDED(
                order_id=_short(str(order["id"])),
                amount=order["total_price"],
                currency=order["currency"],
                cancelled=True,
            ),
        )
    if topic == "refunds/create":
        return _refund(payload, common)
    if topic == "checkouts/create" or topic == "checkouts/update":
        return _checkout(payload, common)
    if topic == "customers/create" or topic == "customers/update":
        customer = _customer(payload, email=None, locale=None, address=None)
        created_at = _time(payload, "created_at")
        return _event(
            "customer_upserted",
            common,
            customer,
            customer["updated_at"] or created_at or received_at,
            _CUSTOMER_UPSERTED(created_at=created_at),
        )
    raise Unusual


# -- straight from the raw body -------------------------------------------------------------------------


def read_body(
    topic: str, body: bytes, *, store_id: str, event_id: str, received_at: datetime
) -> StorefrontEvent | None:
    """`read` of the raw body: the event shopify.to_canonical makes of `parse_json(body)`.

    Raises Unusual (or ValueError) for a body the caller must parse and map as before: one msgspec does
    not decode into these Structs (malformed, another shape, too deep), or one whose skipped fields msgspec
    may not have checked as the JSON parser does (it does not validate the UTF-8 of the strings it skips)."""
    decoder = DECODERS.get(topic)
    if decoder is None:
        raise Unusual
    if not body.isascii():
        body.decode()  # not UTF-8: a UnicodeDecodeError (a ValueError), and parse_json's 400
    try:
        payload = msgspec.to_builtins(decoder.decode(body))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise Unusual from exc
    return read(topic, payload, store_id=store_id, event_id=event_id, received_at=received_at)


def _cart_id(value: str | None) -> str | None:
    return None if value is None else _short(value)


def _event(
    kind: str, common: dict[str, Any], customer: dict[str, Any], occurred_at: datetime, payload: Any
) -> StorefrontEvent:
    event: StorefrontEvent = _EVENTS[kind].of(
        {**common, "customer": _CUSTOMER.of(customer), "occurred_at": occurred_at, "payload": payload}
    )
    return event


def _refund(data: dict[str, Any], common: dict[str, Any]) -> StorefrontEvent:
    _required_int(data, "id")
    order_id = _short(str(_required_int(data, "order_id")))
    created_at = _required_time(data, "created_at")
    amount = Decimal("0")
    currencies = set()
    for transaction in _list(data, "transactions"):
        if type(transaction) is not dict:
            raise Unusual
        kind = _required_str(transaction, "kind")
        status = _str(transaction, "status")
        value = _money(transaction, "amount")
        currency = transaction.get("currency")
        if currency is not None:
            currency = _currency(transaction, "currency")
        if kind == "refund" and status in (None, "success"):
            amount += value
            if currency:
                currencies.add(currency)
    if amount >= _MONEY_CEILING:
        raise Unusual
    return _event(
        "order_refunded",
        common,
        {"placed_order_id": order_id},
        created_at,
        _ORDER_REFUNDED(
            order_id=order_id,
            amount=amount,
            currency=currencies.pop() if len(currencies) == 1 else "XXX",
        ),
    )


def _checkout(data: dict[str, Any], common: dict[str, Any]) -> StorefrontEvent | None:
    token = _required_str(data, "token")
    cart_token = _str(data, "cart_token")
    email = _email(data, "email")
    created_at = _required_time(data, "created_at")
    updated_at = _time(data, "updated_at")
    completed_at = _time(data, "completed_at")
    currency = _currency(data, "currency")
    total = _money(data, "total_price")
    recovery_url = _str(data, "abandoned_checkout_url")
    locale = _locale(data, "customer_locale")
    buyer_accepts_marketing = _bool(data, "buyer_accepts_marketing")
    line_items = _line_items(data)
    customer_data = _object(data, "customer")
    shipping = _address(data, "shipping_address")
    billing = _address(data, "billing_address")
    del cart_token  # read for its type only, as the model did
    if customer_data is None and not email:
        # An anonymous checkout cannot be recovered by email; acknowledged, not produced.
        return None
    customer = _customer(customer_data, email=email, locale=locale, address=shipping or billing)
    if customer.get("accepts_marketing") is None and buyer_accepts_marketing is not None:
        customer["accepts_marketing"] = buyer_accepts_marketing
        customer["consent_at"] = updated_at or created_at
    return _event(
        "cart_updated",
        common,
        customer,
        updated_at or created_at,
        _CART_UPDATED(
            cart_id=_short(token),
            total=total,
            currency=currency,
            line_items=line_items,
            recovery_url=_text(recovery_url, 2000),
            completed=completed_at is not None,
        ),
    )

"""A Segment call's canonical events written straight to their Kafka value bytes, without pydantic models.

The mapping (segment.py) builds every part of an event through a `Builders`: `MODELS` (in segment.py) gives
the canonical pydantic models, as it always did; `RECORDS` (here) gives each part as a plain dict in the
form the model serialises to (its fields in declaration order, defaults written, None left out, which is
`encode_event`'s `exclude_none`) and each event as an `EncodedEvent`: those dicts encoded by msgspec. On the
benchmark's batches, building the models (construct.py) and serialising them (pydantic-core's `to_json`)
cost about 13 µs a call; the dicts and msgspec about 4 (measured in process).

The bytes are the same: msgspec writes strings (UTF-8, the same escapes), integers, booleans, Decimals (as
strings, `str()`), datetimes and dates (RFC 3339, `Z` for UTC, microseconds when set) and StrEnums (their
value) exactly as pydantic-core does. The one difference is a float with a positive exponent (`1e+20` for
pydantic, `1e20` for msgspec), and floats only come in a custom event's free-form `properties`: a custom
event with a float of 1e15 or more there is written by pydantic-core (the same serializer the model's
`dict[str, Any]` field uses).
tests/unit/test_segment_records.py compares both paths over generated events and Segment calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import pydantic_core

from shared.events import SCHEMA_VERSION, EncodedEvent, Source

_encode = msgspec.json.Encoder(decimal_format="string").encode
# Both write floats in their shortest form, switching to an exponent from 1e16 on; with a positive exponent
# pydantic-core writes `1e+16`, msgspec `1e16`. Floats from 1e15 on (and infinities) go to pydantic-core.
_LARGE_FLOAT = 1e15


@dataclass(frozen=True, slots=True)
class Builders:
    """What the mapping builds each part of a canonical event with (keyword arguments: the model's fields).

    `customer` takes the customer's known fields, in the model's declaration order and without None;
    `event` takes the event's type, store, id, customer (as built), payload (as built) and times."""

    customer: Callable[[dict[str, Any]], Any]
    customer_upserted: Callable[..., Any]
    identity_linked: Callable[..., Any]
    custom: Callable[..., Any]
    line_item: Callable[..., Any]
    order_placed: Callable[..., Any]
    order_refunded: Callable[..., Any]
    cart_updated: Callable[..., Any]
    product_viewed: Callable[..., Any]
    survey_answer: Callable[..., Any]
    survey_answered: Callable[..., Any]
    event: Callable[[str, str, str, Any, Any, datetime, datetime], Any]


def _customer(known: dict[str, Any]) -> dict[str, Any]:
    return known


def _customer_upserted(*, created_at: datetime | None) -> dict[str, Any]:
    return {} if created_at is None else {"created_at": created_at}


def _identity_linked(*, previous_id: str, previous_kind: str) -> dict[str, Any]:
    return {"previous_id": previous_id, "previous_kind": previous_kind}


def _custom(*, name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "properties": properties}


def _line_item(
    *,
    product_id: str,
    sku: str | None,
    title: str | None,
    category: str | None,
    quantity: int,
    price: Decimal,
) -> dict[str, Any]:
    item: dict[str, Any] = {"product_id": product_id}
    if sku is not None:
        item["sku"] = sku
    if title is not None:
        item["title"] = title
    if category is not None:
        item["category"] = category
    item["quantity"] = quantity
    item["price"] = price
    return item


def _order_placed(
    *,
    order_id: str,
    total: Decimal,
    currency: str,
    line_items: tuple[dict[str, Any], ...],
    cart_id: str | None,
    discount_codes: tuple[str, ...],
) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_id": order_id,
        "total": total,
        "currency": currency,
        "line_items": line_items,
    }
    if cart_id is not None:
        order["cart_id"] = cart_id
    order["discount_codes"] = discount_codes
    return order


def _order_refunded(*, order_id: str, amount: Decimal, currency: str, cancelled: bool) -> dict[str, Any]:
    return {"order_id": order_id, "amount": amount, "currency": currency, "cancelled": cancelled}


def _cart_updated(
    *,
    cart_id: str,
    action: str,
    line_items: tuple[dict[str, Any], ...],
    total: Decimal,
    currency: str,
    recovery_url: str | None = None,
) -> dict[str, Any]:
    cart: dict[str, Any] = {
        "cart_id": cart_id,
        "action": action,
        "line_items": line_items,
        "total": total,
        "currency": currency,
    }
    if recovery_url is not None:
        cart["recovery_url"] = recovery_url
    cart["completed"] = False
    return cart


def _product_viewed(*, product: dict[str, Any]) -> dict[str, Any]:
    return {"product": product}


def _survey_answer(
    *, statement_id: str, scale: str | None, agree: bool | None, score: int | None
) -> dict[str, Any]:
    answer: dict[str, Any] = {"statement_id": statement_id}
    if scale is not None:
        answer["scale"] = scale
    if agree is not None:
        answer["agree"] = agree
    if score is not None:
        answer["score"] = score
    return answer


def _survey_answered(
    *,
    survey_id: str,
    answers: tuple[dict[str, Any], ...],
    csat: int | None,
    ces: int | None,
    nps: int | None,
) -> dict[str, Any]:
    survey: dict[str, Any] = {"survey_id": survey_id, "answers": answers}
    if csat is not None:
        survey["csat"] = csat
    if ces is not None:
        survey["ces"] = ces
    if nps is not None:
        survey["nps"] = nps
    return survey


def _has_large_float(value: Any) -> bool:
    """Whether a JSON value holds a float msgspec may write otherwise than pydantic-core (see _LARGE_FLOAT).
    Walked with a stack, not recursion (deep bodies)."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is float and not -_LARGE_FLOAT < item < _LARGE_FLOAT and item == item:
            return True
    return False


def customer_key(customer: dict[str, Any]) -> str:
    """`Customer.key` of a customer's known fields."""
    key = customer.get("store_customer_id")
    if key:
        return str(key)
    key = customer.get("anonymous_id")
    if key:
        return f"anon:{key}"
    key = customer.get("email")
    if key:
        return f"email:{key}"
    return f"order:{customer.get('placed_order_id')}"


def _event(
    type_: str,
    store_id: str,
    event_id: str,
    customer: dict[str, Any],
    payload: dict[str, Any],
    occurred_at: datetime,
    received_at: datetime,
) -> EncodedEvent:
    fields = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "store_id": store_id,
        "customer": customer,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "source": "segment",
        "type": type_,
        "payload": payload,
    }
    if type_ == "custom" and _has_large_float(payload["properties"]):
        value = pydantic_core.to_json(fields, inf_nan_mode="null")
    else:
        value = _encode(fields)
    return EncodedEvent(type_, Source.SEGMENT, occurred_at, f"{store_id}:{customer_key(customer)}", value)


RECORDS = Builders(
    customer=_customer,
    customer_upserted=_customer_upserted,
    identity_linked=_identity_linked,
    custom=_custom,
    line_item=_line_item,
    order_placed=_order_placed,
    order_refunded=_order_refunded,
    cart_updated=_cart_updated,
    product_viewed=_product_viewed,
    survey_answer=_survey_answer,
    survey_answered=_survey_answered,
    event=_event,
)

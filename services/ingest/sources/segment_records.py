"""A Segment call's canonical events written straight to their Kafka value bytes, without pydantic models.

The mapping (segment.py) builds every part of an event through a `Builders`: `MODELS` (in segment.py) gives
the canonical pydantic models, as it always did; `RECORDS` (here) gives each part in the form the model
serialises to (its fields in declaration order, defaults written, None left out, which is `encode_event`'s
`exclude_none`): the customer as a plain dict, the payload's parts as msgspec Structs; and each event as an
`EncodedEvent`, those parts encoded by msgspec. On the benchmark's batches, building the models
(construct.py) and serialising them (pydantic-core's `to_json`) cost about 13 µs a call; dicts and msgspec
about 4 (measured in process), Structs a little less.

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


# Each part as a msgspec Struct: its fields in the model's declaration order; a field that is None by default
# is left out when None (omit_defaults, which is exclude_none for these), the others are always written.
# Built and encoded about a quarter cheaper than dicts of the same fields (a Product Viewed event's parts 2.5
# -> 1.9 µs, measured in process); the same JSON (tests/unit/test_segment_records.py).
class _CustomerUpserted(msgspec.Struct, omit_defaults=True):
    created_at: datetime | None = None


class _IdentityLinked(msgspec.Struct):
    previous_id: str
    previous_kind: str


class _Custom(msgspec.Struct):
    name: str
    properties: dict[str, Any]


class _LineItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    product_id: str
    sku: str | None = None
    title: str | None = None
    category: str | None = None
    quantity: int
    price: Decimal


class _OrderPlaced(msgspec.Struct, kw_only=True, omit_defaults=True):
    order_id: str
    total: Decimal
    currency: str
    line_items: tuple[_LineItem, ...]
    cart_id: str | None = None
    discount_codes: tuple[str, ...]


class _OrderRefunded(msgspec.Struct, omit_defaults=True):
    order_id: str
    amount: Decimal
    currency: str
    cancelled: bool
    in_full: bool | None = None


class _CartUpdated(msgspec.Struct, kw_only=True, omit_defaults=True):
    cart_id: str
    action: str
    line_items: tuple[_LineItem, ...]
    total: Decimal
    currency: str
    recovery_url: str | None = None
    completed: bool


class _ProductViewed(msgspec.Struct):
    product: _LineItem


class _SurveyAnswer(msgspec.Struct, kw_only=True, omit_defaults=True):
    statement_id: str
    scale: str | None = None
    agree: bool | None = None
    score: int | None = None


class _SurveyAnswered(msgspec.Struct, kw_only=True, omit_defaults=True):
    survey_id: str
    answers: tuple[_SurveyAnswer, ...]
    csat: int | None = None
    ces: int | None = None
    nps: int | None = None


class _Event(msgspec.Struct):
    type: str
    schema_version: int
    event_id: str
    store_id: str
    customer: dict[str, Any]
    occurred_at: datetime
    received_at: datetime
    source: str
    payload: Any


def _cart_updated(
    *,
    cart_id: str,
    action: str,
    line_items: tuple[_LineItem, ...],
    total: Decimal,
    currency: str,
    recovery_url: str | None = None,
) -> _CartUpdated:
    return _CartUpdated(
        cart_id=cart_id,
        action=action,
        line_items=line_items,
        total=total,
        currency=currency,
        recovery_url=recovery_url,
        completed=False,
    )


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
    payload: Any,
    occurred_at: datetime,
    received_at: datetime,
) -> EncodedEvent:
    if type_ == "custom" and _has_large_float(payload.properties):
        fields = {
            "type": type_,
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id,
            "store_id": store_id,
            "customer": customer,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "source": "segment",
            "payload": msgspec.structs.asdict(payload),
        }
        value = pydantic_core.to_json(fields, inf_nan_mode="null")
    else:
        value = _encode(
            _Event(
                type_,
                SCHEMA_VERSION,
                event_id,
                store_id,
                customer,
                occurred_at,
                received_at,
                "segment",
                payload,
            )
        )
    return EncodedEvent(type_, Source.SEGMENT, occurred_at, f"{store_id}:{customer_key(customer)}", value)


RECORDS = Builders(
    customer=_customer,
    customer_upserted=_CustomerUpserted,
    identity_linked=_IdentityLinked,
    custom=_Custom,
    line_item=_LineItem,
    order_placed=_OrderPlaced,
    order_refunded=_OrderRefunded,
    cart_updated=_cart_updated,
    product_viewed=_ProductViewed,
    survey_answer=_SurveyAnswer,
    survey_answered=_SurveyAnswered,
    event=_event,
)

"""Storefront events as the segmenter decodes and reads them: msgspec Structs mirroring shared/events.py.

The pydantic models in shared/events.py stay the contract: ingest builds and encodes them, their JSON schema
is published, and their validator is the judge of what a message on `storefront-events` means. The segmenter
reads some 10,000 events a second, and pydantic's validation and instances cost it about 8 us of CPU an event
(bench/README.md, thirteenth round): a Struct decodes an event of the benchmark's mix in half the time and
holds it in a third of the memory, and the rules read its fields faster.

The segmenter's decoder (services/segmenter/adapters/event_decoding.py, compiled with its rules; it reads
this module's decoder, patterns and limits) gives the very values the contract's decoder gives, or its very
error:
- A message is read the cheap way only where msgspec and pydantic are known to agree: every string, number,
  date and enum is checked by msgspec as the models' fields say (lengths, bounds), each pattern after it by
  `_Spelling` (`\\Z` where the models' Rust patterns say `$`, which in Python would let a final newline
  through), and the rules the models check in Python are asked here (a customer's identifier, an answer's
  agree or score).
- Values that the models change, or that the two would read differently, are read the cheap way only as
  ingest writes them:
  - emails and language tags only in the form the models give back unchanged;
  - money only as a string of at most 12 + 2 digits, kept as that text (pydantic reads a JSON number through
    a float, so 48.00 becomes 48, where msgspec would keep its digits);
  - no `\\u` escape anywhere (it could hide a NUL, which the models refuse, or a digit);
  - no run of seven or more digits after a point (msgspec rounds a datetime's fraction of a second beyond
    microseconds, pydantic truncates it);
  - valid UTF-8;
  - no key the models do not know (they ignore it; msgspec could only skip it, however deep it nests), and
    at most 128 brackets in a custom event, whose properties hold any JSON (pydantic refuses nesting deeper
    than 200 levels, msgspec does not).
- Anything else is read by the contract's decoder (shared.events.decode_event): a bad message raises its
  pydantic.ValidationError as before, on its way to the dead-letter topic, and a good one spelt otherwise (a
  number for money, an upper-case email) becomes the Struct of its model's values.
tests/unit/test_event_codec.py feeds both decoders the same generated bodies.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
from pydantic import BaseModel

from shared import events
from shared.events import SCHEMA_VERSION, Source, SurveyScale
from shared.fields import LANGUAGE_TAG_PATTERN


class _Spelling:
    """A pattern that a string field's value must match to be read the cheap way, and values seen to match it.

    Checked by the segmenter's cheap decoding after msgspec has read the message, not by msgspec's
    `pattern`, which calls the regex for every value: about 11,200 instructions an event of the benchmark's
    mix, a quarter of the cheap decoding's then. Nearly every value repeats (a store's id, its currencies and
    prices, the customers' languages, a customer's email over its events), and a set look-up finds a seen one
    for a small part of that. The set is emptied when full, so that its memory stays bounded whatever the
    values. Each field's annotation names its spelling (msgspec ignores it): tests find every such field by
    it."""

    __slots__ = ("search", "seen")

    def __init__(self, pattern: str) -> None:
        self.search = re.compile(pattern).search
        # Emptied in place, never replaced: the segmenter's compiled decoder holds each set itself.
        self.seen: set[str] = set()

    def admits(self, value: str) -> bool:
        """Whether `value` matches, kept in `seen` if it does (callers look there first: see the segmenter's
        event_decoding.spelt_as_ingest_writes)."""
        if self.search(value) is None:
            return False
        if len(self.seen) >= _SEEN_SIZE:
            self.seen.clear()
        self.seen.add(value)
        return True


_SEEN_SIZE = 4096

# An amount as ingest writes it (Decimal's str): at most 12 digits before the point and 2 after, not negative.
# A Struct keeps its text under `<name>_text` (its JSON key is the contract's name) and gives it as a Decimal
# under the contract's name. Any other spelling, a JSON number included, takes the contract's decoder.
MONEY_SPELLING = _Spelling(r"^(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,2})?\Z")
MoneyText = Annotated[str, MONEY_SPELLING]


# Values the contract's models change (trim, lower-case, `en_US` to `en-US`) are read the cheap way only as
# the models give them back unchanged; any other spelling takes the contract's decoder.
# shared.fields.email_address: trimmed, lower-cased, an ASCII local part without RFC 5322's specials, ASCII
# labels. (`\Z`, not `$`: Python's `$` also matches before a final newline.)
_CANONICAL_EMAIL = (
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+\Z"
)
# shared.fields.language_tag: its own pattern (case-insensitive, ASCII only, as it is compiled there), nothing
# around it, so neither spaces nor the `_` it turns into `-`.
_CANONICAL_LANGUAGE_TAG = rf"^(?ai:{LANGUAGE_TAG_PATTERN.pattern})\Z"


ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Text40 = Annotated[str, msgspec.Meta(max_length=40)]
Text64 = Annotated[str, msgspec.Meta(max_length=64)]
Text255 = Annotated[str, msgspec.Meta(max_length=255)]
Text1000 = Annotated[str, msgspec.Meta(max_length=1000)]
Text2000 = Annotated[str, msgspec.Meta(max_length=2000)]
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
CURRENCY_SPELLING = _Spelling(r"^[A-Z]{3}\Z")
CurrencyCode = Annotated[str, CURRENCY_SPELLING]
EMAIL_SPELLING = _Spelling(_CANONICAL_EMAIL)
_EMAIL = Annotated[str, msgspec.Meta(max_length=320), EMAIL_SPELLING]
LOCALE_SPELLING = _Spelling(_CANONICAL_LANGUAGE_TAG)
_LANGUAGE_TAG = Annotated[str, msgspec.Meta(max_length=35), LOCALE_SPELLING]
STORE_ID_SPELLING = _Spelling(r"^[a-z0-9][a-z0-9_-]*\Z")


class _Struct(msgspec.Struct, frozen=True, kw_only=True, gc=False, forbid_unknown_fields=True):
    """Frozen like the models; no GC tracking: these hold no cycles, only values and other such Structs (a
    custom event's properties are JSON values, which cannot refer to each other either). Unknown keys are
    refused: see the module's docstring for why."""


class Customer(_Struct, frozen=True, kw_only=True):
    store_customer_id: ShortText | None = None
    anonymous_id: ShortText | None = None
    email: _EMAIL | None = None
    placed_order_id: ShortText | None = None
    phone: Text40 | None = None
    first_name: Text255 | None = None
    last_name: Text255 | None = None
    locale: _LANGUAGE_TAG | None = None
    city: Text255 | None = None
    country: Text255 | None = None
    timezone: Text64 | None = None
    birthday: date | None = None
    accepts_marketing: bool | None = None
    updated_at: Instant | None = None
    consent_at: Instant | None = None

    def is_identified(self) -> bool:
        return events.is_identified(self)

    @property
    def key(self) -> str:
        return events.customer_key(self)


class LineItem(_Struct, frozen=True, kw_only=True):
    product_id: ShortText
    variant_id: ShortText | None = None
    sku: Text255 | None = None
    title: Text1000 | None = None
    category: Text255 | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    price_text: MoneyText = msgspec.field(default="0", name="price")

    @property
    def price(self) -> Decimal:
        return Decimal(self.price_text)


class CustomerUpserted(_Struct, frozen=True, kw_only=True):
    created_at: Instant | None = None


class OrderRefundLine(_Struct, frozen=True, kw_only=True):
    refund_id: ShortText
    amount_text: MoneyText = msgspec.field(name="amount")

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_text)


class OrderPlaced(_Struct, frozen=True, kw_only=True):
    order_id: ShortText
    total_text: MoneyText = msgspec.field(name="total")
    currency: CurrencyCode
    line_items: tuple[LineItem, ...] = ()
    cart_id: ShortText | None = None
    discount_codes: tuple[ShortText, ...] = ()
    updated_at: Instant | None = None
    refunds: tuple[OrderRefundLine, ...] | None = None

    @property
    def total(self) -> Decimal:
        return Decimal(self.total_text)


class OrderRefunded(_Struct, frozen=True, kw_only=True):
    order_id: ShortText
    amount_text: MoneyText = msgspec.field(name="amount")
    currency: CurrencyCode
    cancelled: bool = False
    in_full: bool | None = None

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_text)


class CartUpdated(_Struct, frozen=True, kw_only=True):
    cart_id: ShortText
    action: Literal["snapshot", "added", "removed"] = "snapshot"
    line_items: tuple[LineItem, ...] = ()
    total_text: MoneyText = msgspec.field(default="0", name="total")
    currency: CurrencyCode
    recovery_url: Text2000 | None = None
    completed: bool = False

    @property
    def total(self) -> Decimal:
        return Decimal(self.total_text)


class ProductViewed(_Struct, frozen=True, kw_only=True):
    product: LineItem


class SurveyAnswer(_Struct, frozen=True, kw_only=True):
    statement_id: ShortText
    scale: SurveyScale | None = None
    agree: bool | None = None
    score: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None


class SurveyAnswered(_Struct, frozen=True, kw_only=True):
    survey_id: ShortText
    answers: tuple[SurveyAnswer, ...] = ()
    csat: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    ces: Annotated[int, msgspec.Meta(ge=1, le=7)] | None = None
    nps: Annotated[int, msgspec.Meta(ge=0, le=10)] | None = None


class IdentityLinked(_Struct, frozen=True, kw_only=True):
    previous_id: ShortText
    previous_kind: Literal["anonymous_id", "store_customer_id", "email"] = "anonymous_id"


class CustomerErased(_Struct, frozen=True, kw_only=True):
    scope: Literal["customer", "shop"] = "customer"


class Custom(_Struct, frozen=True, kw_only=True):
    name: ShortText
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


class _Envelope(_Struct, frozen=True, kw_only=True, tag_field="type"):
    # The tag (`type`) is msgspec's, not a field: each class says it again as a ClassVar, for its readers.
    type: ClassVar[str]
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    store_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64), STORE_ID_SPELLING]
    customer: Customer
    occurred_at: Instant
    received_at: Instant
    source: Source

    @property
    def partition_key(self) -> str:
        return f"{self.store_id}:{self.customer.key}"


class CustomerUpsertedEvent(_Envelope, frozen=True, kw_only=True, tag="customer_upserted"):
    type: ClassVar[str] = "customer_upserted"
    payload: CustomerUpserted = msgspec.field(default_factory=CustomerUpserted)


class OrderPlacedEvent(_Envelope, frozen=True, kw_only=True, tag="order_placed"):
    type: ClassVar[str] = "order_placed"
    payload: OrderPlaced


class OrderRefundedEvent(_Envelope, frozen=True, kw_only=True, tag="order_refunded"):
    type: ClassVar[str] = "order_refunded"
    payload: OrderRefunded


class CartUpdatedEvent(_Envelope, frozen=True, kw_only=True, tag="cart_updated"):
    type: ClassVar[str] = "cart_updated"
    payload: CartUpdated


class CartAbandonedEvent(_Envelope, frozen=True, kw_only=True, tag="cart_abandoned"):
    type: ClassVar[str] = "cart_abandoned"
    payload: CartUpdated


class ProductViewedEvent(_Envelope, frozen=True, kw_only=True, tag="product_viewed"):
    type: ClassVar[str] = "product_viewed"
    payload: ProductViewed


class SurveyAnsweredEvent(_Envelope, frozen=True, kw_only=True, tag="survey_answered"):
    type: ClassVar[str] = "survey_answered"
    payload: SurveyAnswered


class IdentityLinkedEvent(_Envelope, frozen=True, kw_only=True, tag="identity_linked"):
    type: ClassVar[str] = "identity_linked"
    payload: IdentityLinked


class CustomerErasedEvent(_Envelope, frozen=True, kw_only=True, tag="customer_erased"):
    type: ClassVar[str] = "customer_erased"
    payload: CustomerErased = msgspec.field(default_factory=CustomerErased)


class CustomEvent(_Envelope, frozen=True, kw_only=True, tag="custom"):
    type: ClassVar[str] = "custom"
    payload: Custom


StorefrontEvent = (
    CustomerUpsertedEvent
    | OrderPlacedEvent
    | OrderRefundedEvent
    | CartUpdatedEvent
    | CartAbandonedEvent
    | ProductViewedEvent
    | SurveyAnsweredEvent
    | IdentityLinkedEvent
    | CustomerErasedEvent
    | CustomEvent
)

DECODER: msgspec.json.Decoder[StorefrontEvent] = msgspec.json.Decoder(StorefrontEvent)
# Each model class of the contract, and the Struct class of the same name here.
_STRUCT_OF: dict[type[BaseModel], type[Any]] = {
    getattr(events, cls.__name__): cls
    for cls in (
        Customer, LineItem, CustomerUpserted, OrderRefundLine, OrderPlaced, OrderRefunded, CartUpdated,
        ProductViewed, SurveyAnswer, SurveyAnswered, IdentityLinked, CustomerErased, Custom,
        *get_args(StorefrontEvent),
    )
}  # fmt: skip
# A fraction of seven digits or more: msgspec rounds a datetime's fraction of a second beyond microseconds,
# pydantic truncates it, so the contract's decoder reads such a message (a custom property's number like it
# too, which is rare and only slower).
LONG_FRACTION = re.compile(rb"\.[0-9]{7}")
MAX_BRACKETS = 128


class _Key(msgspec.Struct):
    event_id: str
    store_id: str


_KEY_DECODER = msgspec.json.Decoder(_Key)


def event_key(raw: bytes) -> tuple[str, str]:
    """A message value's (event_id, store_id), read without building the rest (a fraction of decoding
    it); as the decoded event's when it decodes. Raises msgspec.DecodeError or ValidationError when the
    value has no such strings, RecursionError when it nests near Python's limit (as decoding it does)."""
    key = _KEY_DECODER.decode(raw)
    return key.event_id, key.store_id


def from_model(model: events.StorefrontEvent) -> StorefrontEvent:
    """The Struct holding a contract model's values, as they are: the model validated them already (and
    may hold what the cheap way refuses, such as an email in other letters than ASCII's)."""
    event: StorefrontEvent = _built(model)
    return event


def _built(value: Any) -> Any:
    if isinstance(value, BaseModel):
        cls = _STRUCT_OF[type(value)]
        return cls(
            **{
                # An amount's text: Decimal's str reads back to the very same Decimal.
                name: str(getattr(value, name[:-5]))
                if name.endswith("_text")
                else _built(getattr(value, name))
                for name in cls.__struct_fields__
            }
        )
    if type(value) is tuple:
        return tuple(_built(item) for item in value)
    return value

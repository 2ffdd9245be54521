"""Storefront events as the segmenter decodes and reads them: msgspec Structs mirroring shared/events.py.

The pydantic models in shared/events.py stay the contract: ingest builds and encodes them, their JSON schema
is published, and their validator is the judge of what a message on `storefront-events` means. The segmenter
reads some 10,000 events a second, and pydantic's validation and instances cost it about 8 us of CPU an event
(bench/README.md, thirteenth round): a Struct decodes an event of the benchmark's mix in half the time and
holds it in a third of the memory, and the rules read its fields faster.

`decode_storefront_event` gives the very values the contract's decoder gives, or its very error:
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

    Checked by cheap_decode after msgspec has read the message (`_spelt_as_ingest_writes`), not by msgspec's
    `pattern`, which calls the regex for every value: about 11,200 instructions an event of the benchmark's
    mix, a quarter of cheap_decode's. Nearly every value repeats (a store's id, its currencies and prices, the
    customers' languages, a customer's email over its events), and a set look-up finds a seen one for a small
    part of that. The set is emptied when full, so that its memory stays bounded whatever the values.
    Each field's annotation names its spelling (msgspec ignores it): tests find every such field by it."""

    __slots__ = ("search", "seen")

    def __init__(self, pattern: str) -> None:
        self.search = re.compile(pattern).search
        self.seen: set[str] = set()

    def admits(self, value: str) -> bool:
        """Whether `value` matches, kept in `seen` if it does (callers look there first: see
        _spelt_as_ingest_writes)."""
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
_MONEY = _Spelling(r"^(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,2})?\Z")
MoneyText = Annotated[str, _MONEY]


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
_CURRENCY = _Spelling(r"^[A-Z]{3}\Z")
CurrencyCode = Annotated[str, _CURRENCY]
_EMAIL_SPELLING = _Spelling(_CANONICAL_EMAIL)
_EMAIL = Annotated[str, msgspec.Meta(max_length=320), _EMAIL_SPELLING]
_LOCALE = _Spelling(_CANONICAL_LANGUAGE_TAG)
_LANGUAGE_TAG = Annotated[str, msgspec.Meta(max_length=35), _LOCALE]
_STORE_ID = _Spelling(r"^[a-z0-9][a-z0-9_-]*\Z")


class _Struct(msgspec.Struct, frozen=True, kw_only=True, gc=False, forbid_unknown_fields=True):
    """Frozen like the models; no GC tracking: these hold no cycles, only values and other such Structs (a
    custom event's properties are JSON values, which cannot refer to each other either). Unknown keys are
    refused: see cheap_decode for why."""


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
    store_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64), _STORE_ID]
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

_DECODER: msgspec.json.Decoder[StorefrontEvent] = msgspec.json.Decoder(StorefrontEvent)
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
_LONG_FRACTION = re.compile(rb"\.[0-9]{7}")
_MAX_BRACKETS = 128


def decode_storefront_event(raw: bytes) -> StorefrontEvent:
    """One message value as the contract's decoder reads it; raises pydantic.ValidationError for anything
    that is not a v1 event, with the contract's errors."""
    event = cheap_decode(raw)
    return event if event is not None else from_model(events.decode_event(raw))


class _Key(msgspec.Struct):
    event_id: str
    store_id: str


_KEY_DECODER = msgspec.json.Decoder(_Key)


def event_key(raw: bytes) -> tuple[str, str]:
    """A message value's (event_id, store_id), read without building the rest (a fraction of decoding
    it); as the decoded event's when it decodes. Raises msgspec.DecodeError or ValidationError when the
    value has no such strings, RecursionError when it nests near Python's limit (see cheap_decode)."""
    key = _KEY_DECODER.decode(raw)
    return key.event_id, key.store_id


def cheap_decode(raw: bytes) -> StorefrontEvent | None:
    """The event when msgspec alone can say what the contract's decoder would (see the module's docstring);
    None when that decoder must decide."""
    # The backslash first: one search for one byte (memchr); events without an escape are nearly all. With
    # `find`, not `in`: CPython's `in` on bytes first tries the operand as a byte's value, and formats the
    # TypeError it gets (about 1,000 instructions an event more; callgrind, 10,000 events of the mix).
    if (raw.find(b"\\") >= 0 and raw.find(b"\\u") >= 0) or _LONG_FRACTION.search(raw) is not None:
        return None
    # msgspec checks the UTF-8 of the strings it keeps, not of the keys and values it skips; the contract's
    # decoder refuses invalid UTF-8 anywhere.
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    try:
        event = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    # pydantic's parser refuses a document nested deeper than 200 levels; msgspec reads deeper, and raises
    # RecursionError near Python's own limit (the contract's decoder then has the message, as above). Its
    # classes forbid unknown keys, so only a custom event's properties (any JSON) can nest deeper than they
    # do, and only there are the brackets counted: a document with at most 128 cannot nest deeper than 128.
    # (Counted for every event, they were a quarter of this function's time: 1.3 of 6.1 us an event.)
    if type(event) is CustomEvent and raw.count(b"{") + raw.count(b"[") > _MAX_BRACKETS:
        return None
    if not events.is_identified(event.customer):  # the rule itself: one interpreted call, not two
        return None
    if not _spelt_as_ingest_writes(event):
        return None
    if type(event) is SurveyAnsweredEvent:
        for answer in event.payload.answers:
            if answer.agree is None and answer.score is None:
                return None
    return event


def _spelt_as_ingest_writes(event: StorefrontEvent) -> bool:
    """Whether each field annotated with a _Spelling matches it. Each check is written out, `x in S.seen or
    S.admits(x)`: a set look-up inline for a value seen before, which nearly all are; a method call for each
    value instead (the look-up inside `admits`) costs about 3,300 instructions an event more (callgrind,
    10,000 events of the mix), a third of what the sets save."""
    store_id = event.store_id
    if store_id not in _STORE_ID.seen and not _STORE_ID.admits(store_id):
        return False
    customer = event.customer
    value = customer.email
    if value is not None and value not in _EMAIL_SPELLING.seen and not _EMAIL_SPELLING.admits(value):
        return False
    value = customer.locale
    if value is not None and value not in _LOCALE.seen and not _LOCALE.admits(value):
        return False
    if type(event) is ProductViewedEvent:
        value = event.payload.product.price_text
        return value in _MONEY.seen or _MONEY.admits(value)
    if type(event) is OrderPlacedEvent:
        refunds = event.payload.refunds
        if refunds is not None:
            for refund in refunds:
                value = refund.amount_text
                if value not in _MONEY.seen and not _MONEY.admits(value):
                    return False
        return _sale_spelt(event.payload)
    if type(event) is CartUpdatedEvent or type(event) is CartAbandonedEvent:
        return _sale_spelt(event.payload)
    if type(event) is OrderRefundedEvent:
        return _money_spelt(event.payload.amount_text, event.payload.currency)
    return True


def _sale_spelt(sale: OrderPlaced | CartUpdated) -> bool:
    for item in sale.line_items:
        value = item.price_text
        if value not in _MONEY.seen and not _MONEY.admits(value):
            return False
    return _money_spelt(sale.total_text, sale.currency)


def _money_spelt(amount: str, currency: str) -> bool:
    return (amount in _MONEY.seen or _MONEY.admits(amount)) and (
        currency in _CURRENCY.seen or _CURRENCY.admits(currency)
    )


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

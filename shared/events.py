"""The canonical storefront event: the versioned contract on topic `storefront-events`.

Every source (Shopify, WooCommerce, Segment, our own API) is translated into one of these envelopes by
ingest; the segmenter consumes nothing else. Version 1 may gain optional fields; anything that would break
a consumer gets a new `schema_version`. Unknown fields are ignored so that older consumers keep working
while a newer producer is rolled out.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from shared.fields import LanguageTag, email_address

SCHEMA_VERSION: Literal[1] = 1

# The contract's limits, named once: the models below use them, and so does what makes a platform's values fit
# them (services/ingest/sources/fitting.py) or holds a sum of them (a profile's spend).
SHORT_TEXT_LENGTH = 255
TITLE_LENGTH = 1000
# E.164 numbers have at most 15 digits; 40 leaves room for spaces, a `+` and an extension.
PHONE_LENGTH = 40
URL_LENGTH = 2000
MOST_QUANTITY = 1_000_000
# The largest amount Money holds: 14 digits, 2 of them after the point.
MOST_MONEY = Decimal("999999999999.99")

Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2, ge=0)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
ShortText = Annotated[str, Field(min_length=1, max_length=SHORT_TEXT_LENGTH)]


class Source(StrEnum):
    SHOPIFY = "shopify"
    WOOCOMMERCE = "woocommerce"
    SEGMENT = "segment"
    API = "api"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # reject_nul inlined for the common case: this runs on every field of every event built at ingest,
        # and two extra calls per field were most of its cost.
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError(_NUL_MESSAGE)
            return value
        if isinstance(value, (dict, list, tuple)) and _has_nul(value):
            raise ValueError(_NUL_MESSAGE)
        return value


_NUL_MESSAGE = "must not contain NUL (\\u0000) characters"


def reject_nul(value: Any) -> Any:
    """Field validator body: PostgreSQL text cannot hold NUL, so refusing it at the edge keeps such a value
    from poisoning a consumer downstream. Source models use it too, so the error names the source's field."""
    if _has_nul(value):
        raise ValueError(_NUL_MESSAGE)
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if not isinstance(value, (dict, list, tuple)):
        return False
    # A loop over a stack, not recursion through generators: this runs on every field of every event at
    # ingest and again when the segmenter decodes it, and the generators were a sixth of a batch's time.
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return False


class Customer(_Model):
    """Who the event is about, as far as the source knows. At least one identifier is required."""

    store_customer_id: ShortText | None = None
    anonymous_id: ShortText | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    # Some source events name only the order (Shopify's refunds/create): the customer is whoever placed it,
    # which the segmenter knows.
    placed_order_id: ShortText | None = None
    phone: Annotated[str, Field(max_length=PHONE_LENGTH)] | None = None
    first_name: Annotated[str, Field(max_length=SHORT_TEXT_LENGTH)] | None = None
    last_name: Annotated[str, Field(max_length=SHORT_TEXT_LENGTH)] | None = None
    locale: LanguageTag | None = None
    city: Annotated[str, Field(max_length=SHORT_TEXT_LENGTH)] | None = None
    country: Annotated[str, Field(max_length=SHORT_TEXT_LENGTH)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    birthday: date | None = None
    accepts_marketing: bool | None = None
    # When the source says these details were last changed (Shopify's customer `updated_at`), and when the
    # marketing consent was (its `consent_updated_at`); both default to the event's `occurred_at`. A contact
    # fact only replaces one said earlier, so a late or replayed delivery cannot undo a newer change.
    updated_at: AwareDatetime | None = None
    consent_at: AwareDatetime | None = None

    @field_validator("email")
    @classmethod
    def _normalise_email(cls, value: str | None) -> str | None:
        # One customer, one email: identity resolution compares the trimmed, lower-cased form. It becomes a
        # To header and an SMTP recipient, so anything but one plain address is refused here.
        if value is None or not value.strip():
            return None
        return email_address(value)

    def is_identified(self) -> bool:
        """Whether the customer carries at least one identifier: what `_has_identifier` requires."""
        return is_identified(self)

    @model_validator(mode="after")
    def _has_identifier(self) -> Customer:
        if not self.is_identified():
            raise ValueError("customer needs store_customer_id, anonymous_id, email or placed_order_id")
        return self

    @property
    def key(self) -> str:
        return customer_key(self)


class Identifiers(Protocol):
    """A customer's identifiers, as this contract's Customer and the segmenter's Struct of it hold them."""

    @property
    def store_customer_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...
    @property
    def placed_order_id(self) -> str | None: ...


def is_identified(customer: Identifiers) -> bool:
    """Whether the customer carries at least one identifier."""
    return bool(
        customer.store_customer_id or customer.anonymous_id or customer.email or customer.placed_order_id
    )


def customer_key(customer: Identifiers) -> str:
    """The per-store customer key: the store's id when known, else the anonymous id, else the email, else the
    order that names them."""
    if customer.store_customer_id:
        return customer.store_customer_id
    if customer.anonymous_id:
        return f"anon:{customer.anonymous_id}"
    if customer.email:
        return f"email:{customer.email}"
    return f"order:{customer.placed_order_id}"


_KEY_PREFIXES = {"anon:": "anonymous_id", "email:": "email", "order:": "placed_order_id"}


def customer_named(key: str) -> Customer:
    """The customer a key names (`customer_key`'s inverse): `anon:`, `email:` or `order:` and the identifier,
    else the store's own id. A ValidationError for a key that names nobody."""
    for prefix, field in _KEY_PREFIXES.items():
        if key.startswith(prefix):
            return Customer.model_validate({field: key.removeprefix(prefix)})
    return Customer.model_validate({"store_customer_id": key})


# The contact facts of a customer (every field of Customer but its identifiers and times), defined once here:
# the segmenter's profile keeps, updates, merges and erases exactly these, and its API shows them.
CONTACT_FIELDS: tuple[str, ...] = (
    "email", "first_name", "last_name", "phone", "locale", "city", "country", "timezone", "birthday",
    "accepts_marketing",
)  # fmt: skip
CUSTOMER_IDENTIFIERS = frozenset({"store_customer_id", "anonymous_id", "placed_order_id"})
# When the source says the facts (and the consent) were true: about the contact fields, not among them.
CUSTOMER_FACT_TIMES = frozenset({"updated_at", "consent_at"})


class LineItem(_Model):
    product_id: ShortText
    variant_id: ShortText | None = None
    sku: Annotated[str, Field(max_length=SHORT_TEXT_LENGTH)] | None = None
    title: Annotated[str, Field(max_length=TITLE_LENGTH)] | None = None
    category: Annotated[str, Field(max_length=255)] | None = None
    quantity: Annotated[int, Field(ge=1, le=MOST_QUANTITY)] = 1
    price: Money = Decimal("0")


class CustomerUpserted(_Model):
    created_at: AwareDatetime | None = None


class OrderRefundLine(_Model):
    """A refund the platform lists in the order itself (WooCommerce's `refunds`: it has no refund webhook of
    its own), named by the platform's refund id: one refund listed in several deliveries counts once."""

    refund_id: ShortText
    amount: Money


class OrderPlaced(_Model):
    """An order, as one delivery of it reads. The same order may come again (Shopify's orders/updated,
    WooCommerce's order.updated, a second Order Completed): it counts once, and what it holds (total, lines,
    codes) is the version made last, by `updated_at`, whichever delivery arrives first."""

    order_id: ShortText
    total: Money
    currency: CurrencyCode
    line_items: tuple[LineItem, ...] = ()
    cart_id: ShortText | None = None
    discount_codes: tuple[ShortText, ...] = ()
    # When the platform last changed the order, as this delivery shows it; absent, the event's time.
    updated_at: AwareDatetime | None = None
    # The refunds this delivery lists (partial ones: a refund in full is an `order_refunded`). Absent when the
    # source lists none; a refund once listed stays counted (refunds are added to, not taken back).
    refunds: tuple[OrderRefundLine, ...] | None = None


class OrderRefunded(_Model):
    order_id: ShortText
    amount: Money
    currency: CurrencyCode
    cancelled: bool = False
    # The source said the order was refunded without saying how much: the whole of it, whatever it holds
    # (Segment's documented full refund is an `Order Refunded` naming only the order). `amount` is 0 then.
    in_full: bool | None = None


class CartUpdated(_Model):
    """An open cart or checkout. `snapshot` lists the whole cart; `added`/`removed` only the items that
    changed (Segment's Product Added / Product Removed), to be applied to what the segmenter knows."""

    cart_id: ShortText
    action: Literal["snapshot", "added", "removed"] = "snapshot"
    line_items: tuple[LineItem, ...] = ()
    total: Money = Decimal("0")
    currency: CurrencyCode
    recovery_url: Annotated[str, Field(max_length=URL_LENGTH)] | None = None
    completed: bool = False


class ProductViewed(_Model):
    product: LineItem


class SurveyScale(StrEnum):
    AFFECTIVE = "affective"
    CONATIVE = "conative"
    ACTION = "action"
    COGNITIVE = "cognitive"


class SurveyAnswer(_Model):
    statement_id: ShortText
    scale: SurveyScale | None = None
    agree: bool | None = None
    score: Annotated[int, Field(ge=1, le=5)] | None = None

    @model_validator(mode="after")
    def _agree_or_score(self) -> SurveyAnswer:
        if self.agree is None and self.score is None:
            raise ValueError("an answer needs `agree` or a 1-5 `score`")
        return self


class SurveyAnswered(_Model):
    survey_id: ShortText
    answers: tuple[SurveyAnswer, ...] = ()
    csat: Annotated[int, Field(ge=1, le=5)] | None = None
    ces: Annotated[int, Field(ge=1, le=7)] | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None


class IdentityLinked(_Model):
    previous_id: ShortText
    previous_kind: Literal["anonymous_id", "store_customer_id", "email"] = "anonymous_id"


# The customer key of a shop-wide erasure (Shopify's shop/redact): every customer of the store.
SHOP_WIDE = "*"


class CustomerErased(_Model):
    """`customer` scope: erase one customer. `shop` scope (customer.store_customer_id == SHOP_WIDE): all."""

    scope: Literal["customer", "shop"] = "customer"


class Custom(_Model):
    name: ShortText
    properties: dict[str, Any] = Field(default_factory=dict)


class _Envelope(_Model):
    # The discriminator first: each event class says its own value (a Literal), and a field a subclass says
    # again keeps its place, so every message begins with its `type`. A decoder that picks the class by it
    # (the segmenter's msgspec Structs) then reads the message once; with `type` after the envelope, it
    # skipped the seven fields before it and read them again: msgspec's decoding of the benchmark's mix
    # 15,900 -> 13,000 instructions an event (callgrind, its whole replay), 2.1 -> 1.75 us (in process).
    type: str
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Annotated[str, Field(min_length=1, max_length=200)]
    store_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    customer: Customer
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    source: Source

    @property
    def partition_key(self) -> str:
        """Kafka key: one customer's events land on one partition, so they are processed in order."""
        return f"{self.store_id}:{self.customer.key}"


class CustomerUpsertedEvent(_Envelope):
    type: Literal["customer_upserted"] = "customer_upserted"
    payload: CustomerUpserted = CustomerUpserted()


class OrderPlacedEvent(_Envelope):
    type: Literal["order_placed"] = "order_placed"
    payload: OrderPlaced


class OrderRefundedEvent(_Envelope):
    type: Literal["order_refunded"] = "order_refunded"
    payload: OrderRefunded


class CartUpdatedEvent(_Envelope):
    type: Literal["cart_updated"] = "cart_updated"
    payload: CartUpdated


class CartAbandonedEvent(_Envelope):
    type: Literal["cart_abandoned"] = "cart_abandoned"
    payload: CartUpdated


class ProductViewedEvent(_Envelope):
    type: Literal["product_viewed"] = "product_viewed"
    payload: ProductViewed


class SurveyAnsweredEvent(_Envelope):
    type: Literal["survey_answered"] = "survey_answered"
    payload: SurveyAnswered


class IdentityLinkedEvent(_Envelope):
    type: Literal["identity_linked"] = "identity_linked"
    payload: IdentityLinked


class CustomerErasedEvent(_Envelope):
    type: Literal["customer_erased"] = "customer_erased"
    payload: CustomerErased = CustomerErased()


class CustomEvent(_Envelope):
    type: Literal["custom"] = "custom"
    payload: Custom


StorefrontEvent = Annotated[
    CustomerUpsertedEvent
    | OrderPlacedEvent
    | OrderRefundedEvent
    | CartUpdatedEvent
    | CartAbandonedEvent
    | ProductViewedEvent
    | SurveyAnsweredEvent
    | IdentityLinkedEvent
    | CustomerErasedEvent
    | CustomEvent,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[StorefrontEvent] = TypeAdapter(StorefrontEvent)


class EncodedEvent:
    """A canonical event already written as its message value (the very bytes `encode_event` gives its
    model), with what publishing reads of it: a Segment batch's events are written straight to bytes,
    without a pydantic model each (services/ingest/sources/segment_records.py)."""

    __slots__ = ("occurred_at", "partition_key", "source", "type", "value")

    def __init__(
        self, type: str, source: Source, occurred_at: datetime, partition_key: str, value: bytes
    ) -> None:
        self.type = type
        self.source = source
        self.occurred_at = occurred_at
        # The model's `partition_key`: f"{store_id}:{customer.key}".
        self.partition_key = partition_key
        self.value = value

    def __repr__(self) -> str:
        # Not the value: it holds the customer's personal data, and a repr can end up in a log.
        return f"EncodedEvent(type={self.type!r}, source={self.source.value!r}, {len(self.value)} bytes)"


# What ingest publishes: a model, or an event written to bytes already.
PublishableEvent = StorefrontEvent | EncodedEvent


def encode_event(event: PublishableEvent) -> bytes:
    if type(event) is EncodedEvent:
        return event.value
    # The model's serializer straight to bytes: the very bytes of model_dump_json(...).encode(), without
    # the str made and encoded again (a third cheaper, measured over the benchmark's mix).
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)  # type: ignore[union-attr]


def decode_event(raw: bytes | str) -> StorefrontEvent:
    """Parse one message value; raises pydantic.ValidationError for anything that is not a v1 event.

    The contract's own reading, with every check. The segmenter reads its topic with msgspec Structs
    (shared/storefront_event_structs.py), which give this function's very values or hand the message to it."""
    return _ADAPTER.validate_json(raw)

"""Segment HTTP Tracking API: the documented shapes of its calls, as pydantic models. Pure: no I/O.

These models are the schema: the OpenAPI document shows them, and when a call is invalid they word the 422,
naming every bad field (`properties.total`, `batch[3].userId`). Valid calls are not read through them: the
hot path (`segment_reader`) applies the same rules by hand, several times cheaper, and
tests/unit/test_segment_parser_equivalence.py holds the two to the same answers.

Bodies come from browsers and phones, so nothing is trusted: numbers may arrive as strings, objects may be
missing, and every problem is reported as a `SegmentError` naming the field, never as another exception.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from services.ingest.sources.base import Checked, SourceModel
from shared.events import MOST_MONEY, SurveyScale
from shared.fields import email_address, language_tag

CallKind = Literal["identify", "track", "page", "screen", "alias", "group"]
BATCH_KINDS = ("identify", "track", "page", "screen", "alias", "group")
DEFAULT_CURRENCY = "USD"
EVENT_ID_PREFIX = "segment:"
LINK_SUFFIX = ":link"
PAGE_VIEWED = "Page Viewed"

# The canonical event id holds 200 characters, our prefix and the identify link's suffix included.
MAX_MESSAGE_ID = 200 - len(EVENT_ID_PREFIX) - len(LINK_SUFFIX)
# Canonical ids hold 255; 250 leaves room for the `anon:` prefix of a cart known only by its visitor.
MAX_ID = 250
# How deep a kept custom event's properties may nest (the object itself is level 1). The events' contract is
# read with pydantic's parser, which refuses a document nested deeper than 200 levels: ingest must not
# accept what the segmenter cannot read. No analytics property comes near 32.
MAX_PROPERTIES_DEPTH = 32
# "Page Viewed: <name>" must fit the canonical 255-character event name.
MAX_PAGE_NAME = 255 - len(PAGE_VIEWED) - len(": ")


class SegmentError(ValueError):
    """The payload is not a valid Segment call: `errors` lists (field path, message) for each problem."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))


# --- Field types. Limits mirror the canonical event's, so a call that validates here always maps. -----------


def _blank_is_none(value: Any) -> Any:
    # Libraries send "" for "not known": a missing value, not an invalid one.
    return None if isinstance(value, str) and not value.strip() else value


def _assume_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_cents(value: Decimal) -> Decimal:
    # Browsers compute prices in floating point (19.990000000000002); canonical amounts are in cents.
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _currency_code(value: str) -> str:
    # The spec's own example sends "usd".
    code = value.upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise ValueError("should be a three-letter ISO 4217 currency code such as USD")
    return code


def _as_date(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Text = Annotated[str | None, BeforeValidator(_blank_is_none)]
Id = Annotated[Annotated[str, StringConstraints(max_length=MAX_ID)] | None, BeforeValidator(_blank_is_none)]
ShortText = Annotated[
    Annotated[str, StringConstraints(max_length=255)] | None, BeforeValidator(_blank_is_none)
]
LongText = Annotated[
    Annotated[str, StringConstraints(max_length=1000)] | None, BeforeValidator(_blank_is_none)
]
Url = Annotated[Annotated[str, StringConstraints(max_length=2000)] | None, BeforeValidator(_blank_is_none)]
Email = Annotated[
    Annotated[str, StringConstraints(max_length=320), AfterValidator(email_address)] | None,
    BeforeValidator(_blank_is_none),
]
Phone = Annotated[Annotated[str, StringConstraints(max_length=40)] | None, BeforeValidator(_blank_is_none)]
Locale = Annotated[
    Annotated[str, StringConstraints(max_length=35), AfterValidator(language_tag)] | None,
    BeforeValidator(_blank_is_none),
]
TimeZone = Annotated[Annotated[str, StringConstraints(max_length=64)] | None, BeforeValidator(_blank_is_none)]
Timestamp = Annotated[datetime, AfterValidator(_assume_utc)]
Birthday = Annotated[datetime | date, AfterValidator(_as_date)]
Amount = Annotated[Decimal, Field(ge=0, le=MOST_MONEY, allow_inf_nan=False), AfterValidator(_to_cents)]
Quantity = Annotated[int, Field(ge=1, le=1_000_000)]
Currency = Annotated[Annotated[str, AfterValidator(_currency_code)] | None, BeforeValidator(_blank_is_none)]


class _Model(SourceModel):
    # Segment bodies carry much we do not use (context.device, integrations...); read what we need.
    # Ids and numbers arrive as either JSON type, so numbers are accepted where a string is expected.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, str_strip_whitespace=True)


# --- Common fields ------------------------------------------------------------------------------------------


class SegmentAddress(_Model):
    """The reserved `address` trait (only the parts the funnel uses are read)."""

    city: ShortText = Field(None, description="City, used for location-specific content.")
    country: ShortText = Field(None, description="Country name or ISO code.")


class SegmentTraits(_Model):
    """Reserved traits of the user (camelCase or snake_case, as Segment accepts both); others are ignored."""

    email: Email = Field(None, description="Email address; compared trimmed and lower-cased.")
    first_name: ShortText = Field(
        None, validation_alias=AliasChoices("firstName", "first_name"), description="First name."
    )
    last_name: ShortText = Field(
        None, validation_alias=AliasChoices("lastName", "last_name"), description="Last name."
    )
    name: ShortText = Field(
        None, description="Full name, split at the first space when firstName/lastName are not given."
    )
    phone: Phone = Field(None, description="Phone number.")
    birthday: Birthday | None = Field(None, description="Birthday: an ISO 8601 date (a date-time is cut).")
    address: SegmentAddress | None = Field(None, description="Postal address; `city` and `country` are read.")
    created_at: Timestamp | None = Field(
        None,
        validation_alias=AliasChoices("createdAt", "created_at"),
        description="When the account was created (ISO 8601).",
    )
    accepts_marketing: bool | None = Field(
        None,
        validation_alias=AliasChoices("accepts_marketing", "acceptsMarketing", "email_opt_in"),
        description="Marketing consent (`accepts_marketing`, `acceptsMarketing` or `email_opt_in`); "
        "left unknown when absent.",
    )


class SegmentLibrary(_Model):
    name: Text = Field(None, description="The sending library, for example analytics.js.")
    version: Text = Field(None, description="Its version.")


class SegmentPage(_Model):
    """`context.page`, collected automatically by analytics.js."""

    path: Text = Field(None, description="Path of the page.")
    referrer: Text = Field(None, description="Referring URL.")
    search: Text = Field(None, description="Query string.")
    title: Text = Field(None, description="Title of the page.")
    url: Url = Field(None, description="Full URL; the recovery link of a cart when properties have none.")


class SegmentContext(_Model):
    """Extra information about the call (Segment's `context`); only the fields below are read."""

    traits: SegmentTraits | None = Field(
        None, description="Traits of the user on a non-identify call (email, name... as in identify)."
    )
    locale: Locale = Field(None, description="Locale of the user, such as en-US.")
    timezone: TimeZone = Field(None, description="tz database name, such as Europe/Amsterdam.")
    ip: Text = Field(None, description="IP address of the device (not stored).")
    library: SegmentLibrary | None = Field(None, description="The library that sent the call.")
    page: SegmentPage | None = Field(None, description="The page the call was made on.")
    user_agent: Text = Field(None, alias="userAgent", description="User agent of the device.")


class _Call(_Model):
    message_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_ID)] | None = Field(
        None,
        alias="messageId",
        description="Unique id of the call, set by Segment's libraries: our idempotency key (a retried call "
        "with the same messageId is processed once). Optional, as in Segment's spec: a call without one is "
        "named by a hash of its content and its place in the batch, so the same request sent again is still "
        "processed once.",
    )
    user_id: Id = Field(
        None, alias="userId", description="The store's id of the user. userId or anonymousId is required."
    )
    anonymous_id: Id = Field(
        None,
        alias="anonymousId",
        description="The visitor's pseudo-anonymous id (set by analytics.js). userId or anonymousId is "
        "required.",
    )
    timestamp: Timestamp | None = Field(
        None,
        description="When the call happened (ISO 8601, UTC when no offset); more than a day ahead of our "
        "clock is refused. When absent, originalTimestamp corrected for clock skew, else the time received.",
    )
    original_timestamp: Timestamp | None = Field(
        None,
        alias="originalTimestamp",
        description="Device time when the call was made; with sentAt, corrected as receivedAt - (sentAt - "
        "originalTimestamp).",
    )
    sent_at: Timestamp | None = Field(
        None, alias="sentAt", description="Device time when the call was sent (for clock-skew correction)."
    )
    received_at: Timestamp | None = Field(
        None, alias="receivedAt", description="Ignored: the time of receipt is our own clock's."
    )
    context: SegmentContext | None = Field(None, description="Extra information about the call.")
    integrations: dict[str, Any] | None = Field(
        None, description="Destination switches, accepted and ignored: every call reaches the funnel."
    )
    write_key: Text = Field(
        None, alias="writeKey", description="The source's write key, for clients that do not use Basic auth."
    )


class IdentifyCall(_Call):
    """`POST /v1/identify`: who the user is. With both userId and anonymousId, the visitor's earlier
    anonymous activity is linked to the user."""

    traits: SegmentTraits | None = Field(None, description="What is known about the user.")


TRACK_PROPERTIES_DOC = """Properties of the event. These events are understood (Ecommerce Events v2 names):
- "Order Completed": order_id (or checkout_id), total (else revenue, else the sum of price x quantity),
  currency (default USD), coupon, cart_id, products[] {product_id or sku, sku, name, category, price,
  quantity (default 1)}.
- "Checkout Started", "Cart Viewed": cart_id (or checkout_id, order_id), value / revenue / total, currency,
  url (recovery link), products[].
- "Product Added", "Product Removed": cart_id plus the product's own fields (product_id or sku, name, price,
  quantity...).
- "Product Viewed": the product's fields.
- "Order Refunded", "Order Cancelled": order_id, total (else revenue, else the sum of products), currency.
- "Survey Answered": survey_id; answers[] {statement_id, scale: affective | conative | action | cognitive,
  agree: true/false or score: 1-5}; optional csat (1-5), ces (1-7), nps (0-10). See SurveyAnsweredProperties.
Any other event is kept as a custom event with its properties (nested at most 32 levels deep). `email` here
identifies the user when no traits give one."""


class TrackCall(_Call):
    """`POST /v1/track`: something the user did."""

    event: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description='Name of the event, case-sensitive, such as "Order Completed" or "Survey Answered".'
    )
    properties: dict[str, Any] | None = Field(None, description=TRACK_PROPERTIES_DOC)


class PageCall(_Call):
    """`POST /v1/page`: a page view, kept as a custom "Page Viewed" event."""

    name: Annotated[
        Annotated[str, StringConstraints(max_length=MAX_PAGE_NAME)] | None, BeforeValidator(_blank_is_none)
    ] = Field(None, description='Name of the page; the event is named "Page Viewed: <name>".')
    category: Text = Field(None, description="Category of the page.")
    properties: dict[str, Any] | None = Field(
        None,
        description="Properties of the page (url, path, title, referrer...); context.page fills gaps. Nested "
        "at most 32 levels deep.",
    )


class ScreenCall(PageCall):
    """`POST /v1/screen`: a mobile app's screen view, kept like a page view ("Page Viewed: <name>")."""


class GroupCall(_Call):
    """`POST /v1/group`: the user belongs to a group (a company, a household, a team).

    Accepted, validated and counted (`ingest_segment_calls_total{kind="group"}`), not stored: the funnel
    follows people, not accounts, so neither the membership nor the group's traits reach the profile."""

    group_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)] = Field(
        alias="groupId", description="The group's id. Required."
    )
    traits: dict[str, Any] | None = Field(
        None, description="Traits of the group (name, industry...): ignored."
    )


class AliasCall(_Call):
    """`POST /v1/alias`: the user known as previousId is userId from now on."""

    previous_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)] = Field(
        alias="previousId", description="The id the user had before (usually the anonymousId). Required."
    )


class IdentifyBatchItem(IdentifyCall):
    type: Literal["identify"] = Field(description="The call's method.")


class TrackBatchItem(TrackCall):
    type: Literal["track"] = Field(description="The call's method.")


class PageBatchItem(PageCall):
    type: Literal["page"] = Field(description="The call's method.")


class ScreenBatchItem(PageCall):
    """A mobile screen view, treated like a page view."""

    type: Literal["screen"] = Field(description="The call's method.")


class AliasBatchItem(AliasCall):
    type: Literal["alias"] = Field(description="The call's method.")


class GroupBatchItem(GroupCall):
    """A group call: validated, counted and not stored (the funnel has no accounts)."""

    type: Literal["group"] = Field(description="The call's method.")


BatchItem = Annotated[
    IdentifyBatchItem | TrackBatchItem | PageBatchItem | ScreenBatchItem | AliasBatchItem | GroupBatchItem,
    Field(discriminator="type"),
]


class BatchRequest(_Model):
    """`POST /v1/batch`: many calls at once. Every call is validated before any is accepted: one invalid
    call rejects the whole batch, naming each bad call by its index (`batch[3].properties.total`)."""

    batch: list[BatchItem] = Field(
        description="The calls, each with its `type`: identify, track, page, screen, alias or group."
    )
    write_key: Text = Field(None, alias="writeKey", description="The source's write key (or use Basic auth).")
    context: SegmentContext | None = Field(
        None, description="Context shared by every call; a call's own context keys win."
    )
    sent_at: Timestamp | None = Field(
        None, alias="sentAt", description="Device time when the batch was sent, for calls that have none."
    )


# --- Properties of the understood track events --------------------------------------------------------------


class _Properties(_Model):
    email: Email = Field(None, description="The user's email, when the call's traits have none.")


class SegmentProduct(_Model):
    """A product as the Ecommerce spec describes it; product_id or sku is required."""

    product_id: Id = Field(None, description="Database id of the product.")
    sku: ShortText = Field(None, description="SKU; stands in for product_id when that is missing.")
    name: LongText = Field(None, description="Name of the product.")
    category: ShortText = Field(None, description="Category of the product.")
    price: Amount | None = Field(None, description="Unit price (default 0).")
    quantity: Quantity | None = Field(None, description="Quantity (default 1).")


class ProductProperties(SegmentProduct, _Properties):
    """Product Viewed / Product Added / Product Removed: the product's fields plus the cart."""

    cart_id: Id = Field(None, description="The cart the product was added to or removed from.")
    currency: Currency = Field(None, description="ISO 4217 code (default USD).")


class OrderProperties(_Properties):
    """Order Completed / Order Refunded / Order Cancelled / Checkout Started / Cart Viewed."""

    order_id: Id = Field(None, description="Order or transaction id.")
    checkout_id: Id = Field(None, description="Checkout id; stands in for order_id and cart_id.")
    cart_id: Id = Field(None, description="Shopping cart id.")
    total: Amount | None = Field(None, description="Total with discounts, shipping and tax.")
    revenue: Amount | None = Field(None, description="Revenue excluding shipping and tax.")
    value: Amount | None = Field(None, description="Value of a started checkout.")
    currency: Currency = Field(None, description="ISO 4217 code (default USD).")
    coupon: ShortText = Field(None, description="Coupon redeemed with the order.")
    url: Url = Field(None, description="Where the shopper can resume the cart or checkout.")
    products: list[SegmentProduct] | None = Field(None, description="The items.")


class SurveyAnswerProperties(_Model):
    """One statement of the loyalty survey and the shopper's answer to it."""

    statement_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description='Id of the statement, such as "affective.really_like".'
    )
    scale: Annotated[SurveyScale | None, BeforeValidator(_lower)] = Field(
        None,
        description="The loyalty scale the statement measures: affective (feelings), conative (intention), "
        "action (behaviour toward others) or cognitive (weighted zero by default).",
    )
    agree: bool | None = Field(None, description="Whether the shopper agrees; or give a score.")
    score: Annotated[int, Field(ge=1, le=5)] | None = Field(
        None, description="Agreement from 1 (disagree) to 5 (agree); or give agree."
    )

    @model_validator(mode="after")
    def _agree_or_score(self) -> SurveyAnswerProperties:
        if self.agree is None and self.score is None:
            raise ValueError("an answer needs `agree` (true/false) or a 1-5 `score`")
        return self


class SurveyAnsweredProperties(_Properties):
    """Properties of a "Survey Answered" track call: the multi-part loyalty survey shown after checkout.

    Part 1 affective statements ("I buy this brand because I really like it"...), part 2 conative ("I intend
    to buy this brand in the future too"...), part 3 action ("I recommend this brand to people who ask my
    advice"...), optional part 4 cognitive. Which statements a shopper agrees with places them in the
    loyalty funnel."""

    survey_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description="Id of the survey. Required."
    )
    answers: list[SurveyAnswerProperties] = Field(
        default_factory=list, description="One answer per statement shown."
    )
    csat: Annotated[int, Field(ge=1, le=5)] | None = Field(None, description="Customer satisfaction, 1-5.")
    ces: Annotated[int, Field(ge=1, le=7)] | None = Field(None, description="Customer effort score, 1-7.")
    nps: Annotated[int, Field(ge=0, le=10)] | None = Field(None, description="Net promoter score, 0-10.")


class _BatchEnvelope(_Model):
    # Items are validated one by one (see batch_to_canonical) so that each error names its index.
    batch: list[Any]
    context: dict[str, Any] | None = None
    sent_at: Timestamp | None = Field(None, alias="sentAt")


# --- Errors -------------------------------------------------------------------------------------------------


def at_root(exc: SegmentError) -> SegmentError:
    # Inside, "" is the call itself (a batch prefixes it with the index); to the client it is the body.
    return SegmentError([(field or "body", message) for field, message in exc.errors])


def join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if not prefix or path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path = path + f"[{part}]" if isinstance(part, int) else join(path, str(part))
    return path


def _message(error: ErrorDetails) -> str:
    # Pydantic's wording names Python classes and prefixes our own checks; clients speak JSON.
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return "should be a JSON object"
    return error["msg"].removeprefix("Value error, ")


def errors_of(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    return [(join(prefix, _path(tuple(e["loc"]))), _message(e)) for e in exc.errors()]


def validated(model: type[BaseModel], data: Any, prefix: str = "", *, checked: Checked) -> BaseModel:
    """`data` validated by `model`; a SegmentError naming each bad field under `prefix` ("" = the call)."""
    try:
        return model.model_validate(data, context=checked)
    except ValidationError as exc:
        raise SegmentError(errors_of(exc, prefix)) from None

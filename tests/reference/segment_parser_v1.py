"""FROZEN: the Segment parser as it was before issue 14 (commit 2f8caef, services/ingest/sources/segment.py),
kept verbatim below this note as the oracle of tests/unit/test_segment_parser_equivalence.py, which requires
the production parser to give the same accept/reject, the same error fields and the same canonical events.
Do not change it to follow the production code: it is the "before" the equivalence test compares against.
"""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal, TypeVar

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

from services.ingest.sources.base import NOTHING_CHECKED, Checked, SourceModel
from shared.clock import MAX_CLOCK_AHEAD
from shared.events import (
    CartUpdated,
    CartUpdatedEvent,
    Custom,
    Customer,
    CustomerUpserted,
    CustomerUpsertedEvent,
    CustomEvent,
    IdentityLinked,
    IdentityLinkedEvent,
    LineItem,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    ProductViewed,
    ProductViewedEvent,
    Source,
    StorefrontEvent,
    SurveyAnswer,
    SurveyAnswered,
    SurveyAnsweredEvent,
    SurveyScale,
)
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
# "Page Viewed: <name>" must fit the canonical 255-character event name.
MAX_PAGE_NAME = 255 - len(PAGE_VIEWED) - len(": ")
# The largest amount the canonical Money type holds (14 digits, 2 of them decimals).
MAX_AMOUNT = Decimal("999999999999.99")


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
Amount = Annotated[Decimal, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False), AfterValidator(_to_cents)]
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
    message_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_ID)] = Field(
        alias="messageId",
        description="Unique id of the call, set by the library: our idempotency key (a retried call with "
        "the same messageId is processed once). Required.",
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
Any other event is kept as a custom event with its properties. `email` here identifies the user when no
traits give one."""


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
        None, description="Properties of the page (url, path, title, referrer...); context.page fills gaps."
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


# --- Public entry points ------------------------------------------------------------------------------------


def write_key_from_body(payload: Any) -> str | None:
    """The `writeKey` of a body, for clients that do not send it as the Basic auth user."""
    if not isinstance(payload, dict):
        return None
    key = payload.get("writeKey")
    return (key.strip() or None) if isinstance(key, str) else None


def to_canonical(
    kind: CallKind,
    payload: Any,
    *,
    store_id: str,
    received_at: datetime,
    checked: Checked = NOTHING_CHECKED,
) -> list[StorefrontEvent]:
    """Translate one call (`received_at`: our aware clock; `checked`: what the caller knows of its raw
    body); 0 to 2 events. Raises SegmentError."""
    try:
        return _map_call(
            kind, payload, store_id=store_id, received_at=received_at, batch_sent_at=None, checked=checked
        )
    except SegmentError as exc:
        raise _at_root(exc) from None


def batch_to_canonical(
    payload: Any,
    *,
    store_id: str,
    received_at: datetime,
    max_events: int = 2500,
    checked: Checked = NOTHING_CHECKED,
) -> list[StorefrontEvent]:
    """Translate a batch, all or nothing: one SegmentError lists every invalid call by index."""
    try:
        envelope = _parse(_BatchEnvelope, payload, checked=checked)
    except SegmentError as exc:
        raise _at_root(exc) from None
    if len(envelope.batch) > max_events:
        raise SegmentError(
            [("batch", f"over the limit of {max_events} calls per batch ({len(envelope.batch)} sent)")]
        )
    events: list[StorefrontEvent] = []
    errors: list[tuple[str, str]] = []
    for index, item in enumerate(envelope.batch):
        try:
            events.extend(
                _batch_item(item, envelope, store_id=store_id, received_at=received_at, checked=checked)
            )
        except SegmentError as exc:
            errors.extend((_join(f"batch[{index}]", field), message) for field, message in exc.errors)
    if errors:
        raise SegmentError(errors)
    return events


# --- Validation plumbing ------------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _at_root(exc: SegmentError) -> SegmentError:
    # Inside, "" is the call itself (a batch prefixes it with the index); to the client it is the body.
    return SegmentError([(field or "body", message) for field, message in exc.errors])


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if not prefix or path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path = path + f"[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path


def _message(error: ErrorDetails) -> str:
    # Pydantic's wording names Python classes and prefixes our own checks; clients speak JSON.
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return "should be a JSON object"
    return error["msg"].removeprefix("Value error, ")


def _errors_of(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    return [(_join(prefix, _path(tuple(e["loc"]))), _message(e)) for e in exc.errors()]


def _parse(model: type[_M], data: Any, prefix: str = "", *, checked: Checked) -> _M:
    """Validate `data` against `model`; errors are reported under `prefix` ("" = the call itself)."""
    try:
        return model.model_validate(data, context=checked)
    except ValidationError as exc:
        raise SegmentError(_errors_of(exc, prefix)) from None


def _batch_item(
    item: Any, envelope: _BatchEnvelope, *, store_id: str, received_at: datetime, checked: Checked
) -> list[StorefrontEvent]:
    if not isinstance(item, dict):
        raise SegmentError([("", "a batch item should be an object")])
    kind = item.get("type")
    if kind not in BATCH_KINDS:
        raise SegmentError([("type", f"should be one of {', '.join(BATCH_KINDS)}")])
    own_context = item.get("context")
    if envelope.context is not None and (own_context is None or isinstance(own_context, dict)):
        item = {**item, "context": {**envelope.context, **(own_context or {})}}
    return _map_call(
        kind,
        item,
        store_id=store_id,
        received_at=received_at,
        batch_sent_at=envelope.sent_at,
        checked=checked,
    )


def _map_call(
    kind: str,
    payload: Any,
    *,
    store_id: str,
    received_at: datetime,
    batch_sent_at: datetime | None,
    checked: Checked,
) -> list[StorefrontEvent]:
    def common(call: _Call, *, alias: bool = False) -> _Common:
        return _Common.of(call, store_id, received_at, batch_sent_at, checked, user_id_required=alias)

    try:
        if kind == "identify":
            identify = _parse(IdentifyCall, payload, checked=checked)
            return _identify(identify, common(identify))
        if kind == "track":
            track = _parse(TrackCall, payload, checked=checked)
            return _track(track, common(track))
        if kind in ("page", "screen"):
            page = _parse(ScreenCall if kind == "screen" else PageCall, payload, checked=checked)
            return [_page(page, common(page))]
        if kind == "group":
            group = _parse(GroupCall, payload, checked=checked)
            common(group)  # validated like any call (identity, time), then nothing to publish
            return []
        if kind == "alias":
            alias = _parse(AliasCall, payload, checked=checked)
            return [_alias(alias, common(alias, alias=True))]
    except ValidationError as exc:
        # Unreachable while our limits mirror the canonical ones; kept so a drift is a 4xx, not a 500.
        raise SegmentError(_errors_of(exc)) from None
    raise SegmentError([("type", f"unknown Segment call {kind!r}")])


# --- Envelope: identity, time, customer ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Common:
    """What every event of one call shares."""

    call: _Call
    store_id: str
    received_at: datetime
    occurred_at: datetime
    checked: Checked

    @classmethod
    def of(
        cls,
        call: _Call,
        store_id: str,
        received_at: datetime,
        batch_sent_at: datetime | None,
        checked: Checked,
        *,
        user_id_required: bool,
    ) -> _Common:
        errors = _identity_errors(call, user_id_required=user_id_required)
        occurred_at, time_errors = _occurred_at(call, received_at, batch_sent_at)
        if errors or time_errors:
            raise SegmentError(errors + time_errors)
        return cls(
            call=call, store_id=store_id, received_at=received_at, occurred_at=occurred_at, checked=checked
        )

    def envelope(self, *, email: str | None = None, suffix: str = "") -> dict[str, Any]:
        return {
            "event_id": f"{EVENT_ID_PREFIX}{self.call.message_id}{suffix}",
            "store_id": self.store_id,
            "customer": _customer(self.call, email),
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "source": Source.SEGMENT,
        }

    def properties(self, model: type[_M], properties: dict[str, Any]) -> _M:
        """The call's properties read as `model`; errors name `properties.<field>`."""
        return _parse(model, properties, "properties", checked=self.checked)

    @property
    def visitor(self) -> str:
        return self.call.anonymous_id or self.call.user_id or ""


def _identity_errors(call: _Call, *, user_id_required: bool) -> list[tuple[str, str]]:
    if user_id_required and not call.user_id:
        return [("userId", "userId is required")]
    if not (call.user_id or call.anonymous_id):
        return [("userId", "userId or anonymousId is required")]
    return []


def _occurred_at(
    call: _Call, received_at: datetime, batch_sent_at: datetime | None
) -> tuple[datetime, list[tuple[str, str]]]:
    """Segment's rule: `timestamp` if given, else originalTimestamp corrected for the device's clock skew,
    else the time of receipt. Errors name the field the time came from."""
    sent_at = call.sent_at or batch_sent_at
    if call.timestamp is not None:
        field, occurred_at = "timestamp", call.timestamp
    elif call.original_timestamp is None:
        return received_at, []
    elif sent_at is None:
        field, occurred_at = "originalTimestamp", call.original_timestamp
    else:
        # sentAt and our receipt are the same instant on two clocks: their gap is the device's skew.
        field = "originalTimestamp"
        try:
            occurred_at = received_at - (sent_at - call.original_timestamp)
        except OverflowError:
            return received_at, [(field, "is too far from sentAt to correct the device's clock")]
    if occurred_at - received_at > MAX_CLOCK_AHEAD:
        return received_at, [(field, f"is in the future ({occurred_at.isoformat()})")]
    return occurred_at, []


def _traits(call: _Call) -> tuple[SegmentTraits, ...]:
    """Where a call's traits are, best first: an identify call's own traits describe the user better than
    the traits echoed in its context. Worked out once per customer, not once per trait."""
    # isinstance, not getattr(call, "traits", None): on a model without the field, pydantic's __getattr__
    # raises and catches an AttributeError, which cost a fifth of a batch's mapping time.
    own = call.traits if isinstance(call, IdentifyCall) else None
    echoed = call.context.traits if call.context else None
    return tuple(t for t in (own, echoed) if t is not None)


def _trait(traits: tuple[SegmentTraits, ...], name: str) -> Any:
    for t in traits:
        if (value := getattr(t, name)) is not None:
            return value
    return None


def _split_name(full_name: str) -> tuple[str, str | None]:
    # The greeting needs the first name; everything after the first word is the family name.
    first, *rest = full_name.split(maxsplit=1)
    return first, rest[0] if rest else None


def _customer(call: _Call, email_from_properties: str | None) -> Customer:
    traits = _traits(call)
    first_name, last_name = _trait(traits, "first_name"), _trait(traits, "last_name")
    if first_name is None and last_name is None and (full_name := _trait(traits, "name")):
        first_name, last_name = _split_name(full_name)
    address: SegmentAddress | None = _trait(traits, "address")
    context = call.context
    known = {
        "store_customer_id": call.user_id,
        "anonymous_id": call.anonymous_id,
        "email": _trait(traits, "email") or email_from_properties,
        "phone": _trait(traits, "phone"),
        "first_name": first_name,
        "last_name": last_name,
        "locale": context.locale if context else None,
        "timezone": context.timezone if context else None,
        "city": address.city if address else None,
        "country": address.country if address else None,
        "birthday": _trait(traits, "birthday"),
        "accepts_marketing": _trait(traits, "accepts_marketing"),
    }
    # None is every field's default: left out, it is not validated (nor searched for NUL) again, and most
    # of a browsing visitor's dozen fields are unknown.
    return Customer(**{field: value for field, value in known.items() if value is not None})


# --- Mappings -----------------------------------------------------------------------------------------------


def _identify(call: IdentifyCall, common: _Common) -> list[StorefrontEvent]:
    events: list[StorefrontEvent] = [
        CustomerUpsertedEvent(
            **common.envelope(), payload=CustomerUpserted(created_at=_trait(_traits(call), "created_at"))
        )
    ]
    if call.user_id and call.anonymous_id:
        # The visitor just became known: their anonymous browsing and cart belong to this user now.
        events.append(
            IdentityLinkedEvent(
                **common.envelope(suffix=LINK_SUFFIX),
                payload=IdentityLinked(previous_id=call.anonymous_id, previous_kind="anonymous_id"),
            )
        )
    return events


def _alias(call: AliasCall, common: _Common) -> StorefrontEvent:
    return IdentityLinkedEvent(
        **common.envelope(),
        payload=IdentityLinked(previous_id=call.previous_id, previous_kind="anonymous_id"),
    )


def _page(call: PageCall, common: _Common) -> StorefrontEvent:
    properties = dict(call.properties or {})
    page = call.context.page if call.context else None
    if page is not None:
        # analytics.js repeats the page in context.page; fill what the properties leave out.
        for key, value in page.model_dump(exclude_none=True).items():
            properties.setdefault(key, value)
    email = common.properties(_Properties, properties).email
    name = f"{PAGE_VIEWED}: {call.name}" if call.name else PAGE_VIEWED
    return CustomEvent(**common.envelope(email=email), payload=Custom(name=name, properties=properties))


def _track(call: TrackCall, common: _Common) -> list[StorefrontEvent]:
    properties = call.properties or {}
    match call.event:
        case "Order Completed":
            return [_order_completed(common.properties(OrderProperties, properties), common)]
        case "Checkout Started" | "Cart Viewed":
            return [_cart_snapshot(common.properties(OrderProperties, properties), common)]
        case "Product Added" | "Product Removed":
            action: Literal["added", "removed"] = "added" if call.event == "Product Added" else "removed"
            return [_cart_change(common.properties(ProductProperties, properties), action, common)]
        case "Product Viewed":
            return [_product_viewed(common.properties(ProductProperties, properties), common)]
        case "Order Refunded" | "Order Cancelled":
            cancelled = call.event == "Order Cancelled"
            return [_order_refunded(common.properties(OrderProperties, properties), cancelled, common)]
        case "Survey Answered":
            return [_survey_answered(common.properties(SurveyAnsweredProperties, properties), common)]
    email = common.properties(_Properties, properties).email
    return [
        CustomEvent(**common.envelope(email=email), payload=Custom(name=call.event, properties=properties))
    ]


def _line_item(product: SegmentProduct, path: str) -> LineItem:
    product_id = product.product_id or product.sku
    if product_id is None:
        raise SegmentError([(_join(path, "product_id"), "product_id or sku is required")])
    return LineItem(
        product_id=product_id,
        sku=product.sku,
        title=product.name,
        category=product.category,
        quantity=product.quantity or 1,
        price=product.price or Decimal("0"),
    )


def _line_items(properties: OrderProperties) -> tuple[LineItem, ...]:
    return tuple(_line_item(p, f"properties.products[{i}]") for i, p in enumerate(properties.products or []))


def _sum(items: tuple[LineItem, ...], field: str) -> Decimal:
    total = sum((item.price * item.quantity for item in items), Decimal("0"))
    if total > MAX_AMOUNT:
        raise SegmentError([(field, f"the items add up to more than {MAX_AMOUNT}")])
    return total


def _first_amount(*amounts: Decimal | None) -> Decimal | None:
    return next((amount for amount in amounts if amount is not None), None)


def _order_completed(properties: OrderProperties, common: _Common) -> StorefrontEvent:
    items = _line_items(properties)
    total = _first_amount(properties.total, properties.revenue)
    return OrderPlacedEvent(
        **common.envelope(email=properties.email),
        payload=OrderPlaced(
            order_id=_order_id(properties),
            total=total if total is not None else _sum(items, "properties.products"),
            currency=properties.currency or DEFAULT_CURRENCY,
            line_items=items,
            cart_id=properties.cart_id or properties.checkout_id,
            discount_codes=(properties.coupon,) if properties.coupon else (),
        ),
    )


def _cart_id(explicit: str | None, common: _Common) -> str:
    # Without a cart id the cart is the visitor's: one open cart per visitor is what analytics.js knows.
    return explicit or f"anon:{common.visitor}"


def _recovery_url(url: str | None, common: _Common) -> str | None:
    # analytics.js fires Checkout Started on the checkout page itself: that page is where to come back.
    page = common.call.context.page if common.call.context else None
    return url or (page.url if page else None)


def _cart_snapshot(properties: OrderProperties, common: _Common) -> StorefrontEvent:
    items = _line_items(properties)
    total = _first_amount(properties.value, properties.revenue, properties.total)
    return CartUpdatedEvent(
        **common.envelope(email=properties.email),
        payload=CartUpdated(
            cart_id=_cart_id(properties.cart_id or properties.checkout_id or properties.order_id, common),
            action="snapshot",
            line_items=items,
            total=total if total is not None else _sum(items, "properties.products"),
            currency=properties.currency or DEFAULT_CURRENCY,
            recovery_url=_recovery_url(properties.url, common),
        ),
    )


def _cart_change(
    properties: ProductProperties, action: Literal["added", "removed"], common: _Common
) -> StorefrontEvent:
    item = _line_item(properties, "properties")
    return CartUpdatedEvent(
        **common.envelope(email=properties.email),
        payload=CartUpdated(
            cart_id=_cart_id(properties.cart_id, common),
            action=action,
            line_items=(item,),
            # The value of the change, not of the cart: a delta's consumer knows the rest of the cart.
            total=_sum((item,), "properties.price"),
            currency=properties.currency or DEFAULT_CURRENCY,
        ),
    )


def _product_viewed(properties: ProductProperties, common: _Common) -> StorefrontEvent:
    return ProductViewedEvent(
        **common.envelope(email=properties.email),
        payload=ProductViewed(product=_line_item(properties, "properties")),
    )


def _order_id(properties: OrderProperties) -> str:
    # Order Completed may name the order by its checkout only; a later refund must name it the same way.
    order_id = properties.order_id or properties.checkout_id
    if order_id is None:
        raise SegmentError([("properties.order_id", "order_id or checkout_id is required")])
    return order_id


def _order_refunded(properties: OrderProperties, cancelled: bool, common: _Common) -> StorefrontEvent:
    amount = _first_amount(properties.total, properties.revenue)
    return OrderRefundedEvent(
        **common.envelope(email=properties.email),
        payload=OrderRefunded(
            order_id=_order_id(properties),
            amount=amount if amount is not None else _sum(_line_items(properties), "properties.products"),
            currency=properties.currency or DEFAULT_CURRENCY,
            cancelled=cancelled,
        ),
    )


def _survey_answered(properties: SurveyAnsweredProperties, common: _Common) -> StorefrontEvent:
    return SurveyAnsweredEvent(
        **common.envelope(email=properties.email),
        payload=SurveyAnswered(
            survey_id=properties.survey_id,
            answers=tuple(
                SurveyAnswer(statement_id=a.statement_id, scale=a.scale, agree=a.agree, score=a.score)
                for a in properties.answers
            ),
            csat=properties.csat,
            ces=properties.ces,
            nps=properties.nps,
        ),
    )

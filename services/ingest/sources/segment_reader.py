"""Reading Segment calls on the hot path: the rules of `segment_models`, applied by hand. Pure: no I/O.

Validating a call through the pydantic models cost about 40 µs (a Python validator per field: blanks, NUL,
emails), more than everything else a batch does per call. Here each field is read once, with the common
JSON forms (a string, an integer, a float, an object) checked inline and every other form handed to a
pydantic TypeAdapter of the field's own type, so an odd value (a number as a string, a timestamp as epoch
seconds, "yes" for a boolean) gets exactly the model's answer. When anything is wrong, the reader stops
(`Invalid`) and the caller lets the model word the 422, naming every bad field as before.
tests/unit/test_segment_parser_equivalence.py feeds this reader and the pre-issue-14 parser the same bodies.

Whitespace: the models strip strings as pydantic-core does (Rust's `str::trim`, Unicode White_Space), which
is not Python's `str.strip()` (that also strips U+001C-U+001F); blank checks are Python's, as the models'
before-validators are.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from math import isfinite
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from services.ingest.sources import segment_models as m
from shared.events import MOST_MONEY, SurveyScale
from shared.fields import email_address, language_tag

# What pydantic-core's str_strip_whitespace strips (Rust's char::is_whitespace: Unicode White_Space).
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
NO_LIMIT = sys.maxsize
CENT = Decimal("0.01")


class Invalid(Exception):
    """The reader refuses a value; `field` names it (the model's error list is what the client sees)."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


# The models' own types and settings, for the uncommon forms of a value.
_CONFIG = ConfigDict(coerce_numbers_to_str=True, str_strip_whitespace=True)
_TIMESTAMP: TypeAdapter[datetime | None] = TypeAdapter(m.Timestamp | None, config=_CONFIG)
_BIRTHDAY: TypeAdapter[date | None] = TypeAdapter(m.Birthday | None, config=_CONFIG)
_AMOUNT: TypeAdapter[Decimal | None] = TypeAdapter(m.Amount | None, config=_CONFIG)
_BOOL: TypeAdapter[bool | None] = TypeAdapter(bool | None, config=_CONFIG)
_SCALE: TypeAdapter[SurveyScale | None] = TypeAdapter(
    m.SurveyAnswerProperties.model_fields["scale"].rebuild_annotation(), config=_CONFIG
)
_MAPPING: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any], config=_CONFIG)
_INTEGERS: dict[tuple[int, int], TypeAdapter[int | None]] = {}


def _adapted(adapter: TypeAdapter[Any], value: Any, field: str) -> Any:
    try:
        # The adapter's own validator: TypeAdapter.validate_python only checks its keyword arguments first.
        return adapter.validator.validate_python(value)
    except ValidationError:
        raise Invalid(field) from None


# --- Scalars ------------------------------------------------------------------------------------------------


def _unicode(value: str) -> bool:
    """Whether `value` is text pydantic takes: no lone surrogate (JSON can carry one as an escape)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def text(value: Any, limit: int, field: str) -> str | None:
    """An optional string (Text, Id, ShortText...): blank is absent, numbers become strings, trimmed."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        stripped = value.strip()
        if not stripped:
            return None
        if stripped is value:
            # Nothing to strip by Python's notion, so none by pydantic's narrower one; ASCII has no surrogate.
            if not value.isascii() and not _unicode(value):
                raise Invalid(field)
            result: str = value
        elif not _unicode(value):
            raise Invalid(field)
        else:
            result = value.strip(WHITESPACE)
    elif kind is int or kind is float:
        result = str(value)
    else:
        raise Invalid(field)
    if len(result) > limit:
        raise Invalid(field)
    return result


def required(value: Any, low: int, high: int, field: str) -> str:
    """A required string (messageId, event, previousId...): trimmed; blank is too short, not absent."""
    kind = type(value)
    if kind is str:
        if value.isascii() and value.strip() is value:
            # As in `text`: nothing to strip, and no surrogate (strip(WHITESPACE) cost 0.3 µs a call).
            result: str = value
        elif not _unicode(value):
            raise Invalid(field)
        else:
            result = value.strip(WHITESPACE)
    elif kind is int or kind is float:
        result = str(value)
    else:
        raise Invalid(field)
    if not low <= len(result) <= high:
        raise Invalid(field)
    return result


def email(value: Any, field: str) -> str | None:
    found = text(value, 320, field)
    if found is None:
        return None
    try:
        return email_address(found)
    except ValueError:
        raise Invalid(field) from None


# Tags already read, as language_tag gave them: a store's visitors send a handful of locales, and matching
# the BCP 47 expression was a twentieth of reading a call.
_LOCALES: dict[str, str] = {}
_MAX_LOCALES = 1024


def locale(value: Any, field: str) -> str | None:
    found = text(value, 35, field)
    if found is None:
        return None
    known = _LOCALES.get(found)
    if known is not None:
        return known
    try:
        tag = language_tag(found)
    except ValueError:
        raise Invalid(field) from None
    if len(_LOCALES) < _MAX_LOCALES:
        _LOCALES[found] = tag
    return tag


def currency(value: Any, field: str) -> str | None:
    found = text(value, NO_LIMIT, field)
    if found is None:
        return None
    try:
        return m._currency_code(found)
    except ValueError:
        raise Invalid(field) from None


# The form every Segment library sends (JavaScript's toISOString, with milliseconds; or microseconds), UTC:
# `[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}|\.[0-9]{6})?Z`, written with every digit
# as 0. An ASCII text whose digits all become 0 is one of these exactly when that expression matches it
# (tests/unit/test_segment_reader_times.py): 0.4 µs a time where matching the expression took 1.0.
_ZEROED = bytes.maketrans(b"123456789", b"000000000")
_ISO_UTC_FORMS = frozenset(
    {b"0000-00-00T00:00:00Z", b"0000-00-00T00:00:00.000Z", b"0000-00-00T00:00:00.000000Z"}
)


def usual_time(value: str) -> bool:
    """Whether `value` is of that form (ASCII digits where it has digits, and its very punctuation)."""
    return value.isascii() and value.encode().translate(_ZEROED) in _ISO_UTC_FORMS


def timestamp(value: Any, field: str) -> datetime | None:
    # pydantic-core's own parser: the same instants, offsets (its TzInfo) and accepted forms as the model.
    if value is None:
        return None
    if type(value) is str and usual_time(value):
        # The usual form, read by the standard library: the same instant as pydantic-core's, on the standard
        # UTC, whose offset costs nothing to ask where TzInfo's cost 1.3 µs (each time comparison and each
        # written time asks it). A time the standard library refuses (a leap second, year 0) goes on below.
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    result: datetime | None = _adapted(_TIMESTAMP, value, field)
    return result


def birthday(value: Any, field: str) -> date | None:
    if value is None:
        return None
    result: date | None = _adapted(_BIRTHDAY, value, field)
    return result


def amount(value: Any, field: str) -> Decimal | None:
    """A non-negative amount up to the canonical maximum, in cents (half up), as the model's `Amount`."""
    kind = type(value)
    if kind is int:
        result = Decimal(value)
    elif kind is float:
        if not isfinite(value):
            raise Invalid(field)
        # pydantic reads a float through its shortest repr (1.005 is 1.005, not 1.00499...).
        result = Decimal(repr(value))
    elif value is None:
        return None
    else:
        adapted: Decimal | None = _adapted(_AMOUNT, value, field)
        return adapted
    if result < 0 or result > MOST_MONEY:
        raise Invalid(field)
    return result.quantize(CENT, rounding=ROUND_HALF_UP)


def integer(value: Any, low: int, high: int, field: str) -> int | None:
    if type(value) is int:
        if not low <= value <= high:
            raise Invalid(field)
        return value
    if value is None:
        return None
    adapter = _INTEGERS.get((low, high))
    if adapter is None:
        from typing import Annotated

        from pydantic import Field

        adapter = TypeAdapter(Annotated[int, Field(ge=low, le=high)] | None, config=_CONFIG)
        _INTEGERS[(low, high)] = adapter
    result: int | None = _adapted(adapter, value, field)
    return result


def boolean(value: Any, field: str) -> bool | None:
    if value is None or type(value) is bool:
        return value
    result: bool | None = _adapted(_BOOL, value, field)
    return result


def scale(value: Any, field: str) -> SurveyScale | None:
    if type(value) is str:
        try:
            return SurveyScale(value.strip().lower())
        except ValueError:
            raise Invalid(field) from None
    result: SurveyScale | None = _adapted(_SCALE, value, field)
    return result


def mapping(value: Any, field: str) -> dict[str, Any] | None:
    """An optional JSON object read as `dict[str, Any]`: its keys trimmed (the models' setting)."""
    if value is None:
        return None
    if type(value) is not dict:
        raise Invalid(field)
    for key in value:
        # strip returns the very string when there is nothing to strip: the common case copies nothing.
        # Python's strip (no argument) strips all of WHITESPACE and more, and is cheaper than
        # strip(WHITESPACE) on the 10-15 keys of a call's properties; only a key it would strip (or one not
        # ASCII) needs the narrower question.
        if (type(key) is not str or not key.isascii() or key.strip() is not key) and (
            type(key) is not str or key.strip(WHITESPACE) is not key or not _unicode(key)
        ):
            result: dict[str, Any] = _adapted(_MAPPING, value, field)
            return result
    return value


def has_nul(value: Any) -> bool:
    """Whether a NUL is in any string (key or value) of a JSON value: what the models' NUL check refuses in
    the fields it reads. Walked with a stack, not recursion (deep bodies)."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if type(item) is str:
            if "\x00" in item:
                return True
        elif type(item) is dict:
            pending.extend(item)
            pending.extend(item.values())
        elif type(item) is list or type(item) is tuple:
            pending.extend(item)
    return False


def choice(call: dict[str, Any], *names: str) -> Any:
    """The value under the first of `names` present (pydantic's AliasChoices: present, even if null)."""
    for name in names:
        if name in call:
            return call[name]
    return None


def _object(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise Invalid(field)
    return value


# --- Shapes -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Address:
    city: str | None
    country: str | None


@dataclass(slots=True)
class Traits:
    email: str | None
    first_name: str | None
    last_name: str | None
    name: str | None
    phone: str | None
    birthday: date | None
    address: Address | None
    created_at: datetime | None
    accepts_marketing: bool | None


@dataclass(slots=True)
class PageRef:
    """`context.page`, checked; its url is read (a cart's recovery link), the rest only on a page call."""

    fields: dict[str, Any]
    url: str | None

    def known(self) -> dict[str, str]:
        """The fields that are set, in the model's order (what `model_dump(exclude_none=True)` gave)."""
        known: dict[str, str] = {}
        for name in _PAGE_TEXTS:
            value = text(self.fields.get(name), NO_LIMIT, name)
            if value is not None:
                known[name] = value
        if self.url is not None:
            known["url"] = self.url
        return known


@dataclass(slots=True)
class Context:
    traits: Traits | None
    locale: str | None
    timezone: str | None
    page: PageRef | None


@dataclass(slots=True)
class Call:
    """One call as the models would have read it (only what the mapping uses is kept)."""

    kind: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime | None
    original_timestamp: datetime | None
    sent_at: datetime | None
    context: Context | None
    traits: Traits | None  # identify's own traits
    event: str  # track's event name
    name: str | None  # page's
    properties: dict[str, Any] | None
    previous_id: str  # alias's


def read_traits(traits: dict[str, Any]) -> Traits:
    address = _object(traits.get("address"), "address")
    return Traits(
        email=email(traits.get("email"), "email"),
        first_name=text(choice(traits, "firstName", "first_name"), 255, "firstName"),
        last_name=text(choice(traits, "lastName", "last_name"), 255, "lastName"),
        name=text(traits.get("name"), 255, "name"),
        phone=text(traits.get("phone"), 40, "phone"),
        birthday=birthday(traits.get("birthday"), "birthday"),
        address=None
        if address is None
        else Address(
            city=text(address.get("city"), 255, "address.city"),
            country=text(address.get("country"), 255, "address.country"),
        ),
        created_at=timestamp(choice(traits, "createdAt", "created_at"), "createdAt"),
        accepts_marketing=boolean(
            choice(traits, "accepts_marketing", "acceptsMarketing", "email_opt_in"), "accepts_marketing"
        ),
    )


def check_texts(obj: dict[str, Any], names: tuple[str, ...], prefix: str) -> None:
    """Fields read as `Text` (no limit) and then not used: only their type can be wrong (a string without
    lone surrogates, a number or null), so they are checked in one loop, not read one by one."""
    for name in names:
        value = obj.get(name)
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            if not value.isascii() and not _unicode(value):
                raise Invalid(prefix + name)
        elif kind is not int and kind is not float:
            raise Invalid(prefix + name)


_CONTEXT_TEXTS = ("ip", "userAgent")
_LIBRARY_TEXTS = ("name", "version")
_PAGE_TEXTS = ("path", "referrer", "search", "title")
_CALL_TEXTS = ("writeKey",)
_PAGE_CALL_TEXTS = ("writeKey", "category")


def _read_context(context: dict[str, Any]) -> Context:
    traits = _object(context.get("traits"), "context.traits")
    library = _object(context.get("library"), "context.library")
    if library is not None:  # validated, not used
        check_texts(library, _LIBRARY_TEXTS, "context.library.")
    check_texts(context, _CONTEXT_TEXTS, "context.")
    page = _object(context.get("page"), "context.page")
    if page is not None:
        check_texts(page, _PAGE_TEXTS, "context.page.")
    return Context(
        traits=None if traits is None else read_traits(traits),
        locale=locale(context.get("locale"), "context.locale"),
        timezone=text(context.get("timezone"), 64, "context.timezone"),
        page=None if page is None else PageRef(page, text(page.get("url"), 2000, "context.page.url")),
    )


def nests_deeper_than(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether `value` (a JSON object or array: level 1) holds an object or array more than `limit` levels
    deep. Without recursion: a document nested near Python's recursion limit is what this looks for."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children: Iterable[Any] = node.values() if isinstance(node, dict) else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if level == limit:
                    return True
                stack.append((child, level + 1))
    return False


# What may differ between two sendings of one call: the time it was sent (a client stamps each attempt),
# the time Segment would have received it (ignored) and the write key, which names the store.
_RESENT_FIELDS = frozenset({"messageId", "sentAt", "receivedAt", "writeKey"})


def named(kind: str, call: Any, position: int | None) -> Any:
    """The call, with a messageId if it was sent without one (None or absent).

    Segment's spec makes messageId implicit ("Automatically collected by Segment", Spec: Common fields): its
    libraries set it, and the HTTP API's own examples leave it out. Without one, a call is named by what it
    says: a SHA-256 of its kind, its place in its batch (`position`; None for a call sent alone) and its
    fields as sent but those that change between sendings. A client that sends the same request again (a
    retry after a timeout) sends the same call, which is then applied once, as with a messageId; two calls
    that differ in anything, a timestamp or their place in the batch, are two. The `sha256:` prefix keeps
    these apart from the libraries' ids (UUIDs, ksuids)."""
    if type(call) is not dict or call.get("messageId") is not None:
        return call
    content = {key: value for key, value in call.items() if key not in _RESENT_FIELDS}
    canonical = json.dumps([kind, position, content], sort_keys=True, separators=(",", ":"))
    return {**call, "messageId": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()}


def read_call(kind: str, call: Any) -> Call:
    """The fields of one call of `kind` (identify, track, page, screen, group, alias), as the kind's model
    reads them (a call without messageId is `named` first); raises Invalid at the first field it refuses."""
    if type(call) is not dict:
        raise Invalid("")
    context = _object(call.get("context"), "context")
    if call.get("receivedAt") is not None:  # validated, then ignored: receipt is our clock's
        timestamp(call["receivedAt"], "receivedAt")
    mapping(call.get("integrations"), "integrations")
    own_traits: Traits | None = None
    event = previous_id = ""
    name: str | None = None
    properties: dict[str, Any] | None = None
    check_texts(call, _PAGE_CALL_TEXTS if kind in ("page", "screen") else _CALL_TEXTS, "")
    if kind == "track":
        event = required(call.get("event"), 1, 255, "event")
        properties = mapping(call.get("properties"), "properties")
    elif kind == "identify":
        traits = _object(call.get("traits"), "traits")
        own_traits = None if traits is None else read_traits(traits)
    elif kind in ("page", "screen"):
        name = text(call.get("name"), m.MAX_PAGE_NAME, "name")
        properties = mapping(call.get("properties"), "properties")
    elif kind == "alias":
        previous_id = required(call.get("previousId"), 1, m.MAX_ID, "previousId")
    elif kind == "group":
        required(call.get("groupId"), 1, m.MAX_ID, "groupId")
        mapping(call.get("traits"), "traits")
    return Call(
        kind=kind,
        message_id=required(call.get("messageId"), 1, m.MAX_MESSAGE_ID, "messageId"),
        user_id=text(call.get("userId"), m.MAX_ID, "userId"),
        anonymous_id=text(call.get("anonymousId"), m.MAX_ID, "anonymousId"),
        timestamp=timestamp(call.get("timestamp"), "timestamp"),
        original_timestamp=timestamp(call.get("originalTimestamp"), "originalTimestamp"),
        sent_at=timestamp(call.get("sentAt"), "sentAt"),
        context=None if context is None else _read_context(context),
        traits=own_traits,
        event=event,
        name=name,
        properties=properties,
        previous_id=previous_id,
    )


# --- Properties of the understood track events --------------------------------------------------------------


@dataclass(slots=True)
class Product:
    product_id: str | None
    sku: str | None
    name: str | None
    category: str | None
    price: Decimal | None
    quantity: int | None


@dataclass(slots=True)
class ProductProperties:
    email: str | None
    product: Product
    cart_id: str | None
    currency: str | None


@dataclass(slots=True)
class OrderProperties:
    email: str | None
    order_id: str | None
    checkout_id: str | None
    cart_id: str | None
    total: Decimal | None
    revenue: Decimal | None
    value: Decimal | None
    currency: str | None
    coupon: str | None
    url: str | None
    products: list[Product]


@dataclass(slots=True)
class Answer:
    statement_id: str
    scale: SurveyScale | None
    agree: bool | None
    score: int | None


@dataclass(slots=True)
class SurveyProperties:
    email: str | None
    survey_id: str
    answers: list[Answer]
    csat: int | None
    ces: int | None
    nps: int | None


def read_email(properties: dict[str, Any]) -> str | None:
    """Any other event's properties: only `email` is read (`_Properties`)."""
    return email(properties.get("email"), "properties.email")


def _product(product: dict[str, Any], field: str) -> Product:
    return Product(
        product_id=text(product.get("product_id"), m.MAX_ID, field),
        sku=text(product.get("sku"), 255, field),
        name=text(product.get("name"), 1000, field),
        category=text(product.get("category"), 255, field),
        price=amount(product.get("price"), field),
        quantity=integer(product.get("quantity"), 1, 1_000_000, field),
    )


def read_product_properties(properties: dict[str, Any]) -> ProductProperties:
    return ProductProperties(
        email=read_email(properties),
        product=_product(properties, "properties"),
        cart_id=text(properties.get("cart_id"), m.MAX_ID, "properties.cart_id"),
        currency=currency(properties.get("currency"), "properties.currency"),
    )


def read_order_properties(properties: dict[str, Any]) -> OrderProperties:
    products = properties.get("products")
    if products is None:
        products = ()
    elif type(products) is not list:
        raise Invalid("properties.products")
    read: list[Product] = []
    for product in products:
        if type(product) is not dict:
            raise Invalid("properties.products")
        read.append(_product(product, "properties.products"))
    return OrderProperties(
        email=read_email(properties),
        order_id=text(properties.get("order_id"), m.MAX_ID, "properties.order_id"),
        checkout_id=text(properties.get("checkout_id"), m.MAX_ID, "properties.checkout_id"),
        cart_id=text(properties.get("cart_id"), m.MAX_ID, "properties.cart_id"),
        total=amount(properties.get("total"), "properties.total"),
        revenue=amount(properties.get("revenue"), "properties.revenue"),
        value=amount(properties.get("value"), "properties.value"),
        currency=currency(properties.get("currency"), "properties.currency"),
        coupon=text(properties.get("coupon"), 255, "properties.coupon"),
        url=text(properties.get("url"), 2000, "properties.url"),
        products=read,
    )


def _answer(answer: Any) -> Answer:
    field = "properties.answers"
    if type(answer) is not dict:
        raise Invalid(field)
    agree = boolean(answer.get("agree"), field)
    score = integer(answer.get("score"), 1, 5, field)
    if agree is None and score is None:
        raise Invalid(field)
    return Answer(
        statement_id=required(answer.get("statement_id"), 1, 255, field),
        scale=scale(answer.get("scale"), field),
        agree=agree,
        score=score,
    )


def read_survey_properties(properties: dict[str, Any]) -> SurveyProperties:
    answers = properties.get("answers", [])
    if type(answers) is not list:
        raise Invalid("properties.answers")
    return SurveyProperties(
        email=read_email(properties),
        survey_id=required(properties.get("survey_id"), 1, 255, "properties.survey_id"),
        answers=[_answer(answer) for answer in answers],
        csat=integer(properties.get("csat"), 1, 5, "properties.csat"),
        ces=integer(properties.get("ces"), 1, 7, "properties.ces"),
        nps=integer(properties.get("nps"), 0, 10, "properties.nps"),
    )

"""Segment HTTP Tracking API: translation of calls to canonical events. Pure: no I/O, no clock.

Storefronts instrumented with Segment's libraries (analytics.js, analytics-node, analytics-python...) can
point them at ingest instead of api.segment.io: `/v1/identify`, `/v1/track`, `/v1/page`, `/v1/alias` and
`/v1/batch` take the same bodies. Shopping events use the Ecommerce Events v2 names; survey answers are a
"Survey Answered" track call (see `SurveyAnsweredProperties`).

The documented shapes are the models of `segment_models`; calls are read by `segment_reader`, which applies
the same rules by hand, and an invalid call is handed to its model so that the 422 names every bad field
(`properties.total`, `batch[3].userId`), never another exception. Canonical events are built without
validation (`construct.py`): by then every value has passed the checks the canonical model would make
(the limits of the Segment fields mirror the canonical ones, NUL is refused at the edge), and validating
them again was a third of a call's cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec
import pydantic_core

from services.ingest.sources import segment_reader as r
from services.ingest.sources.base import NOTHING_CHECKED, Checked
from services.ingest.sources.construct import Constructor
from services.ingest.sources.segment_models import (
    BATCH_KINDS,
    DEFAULT_CURRENCY,
    EVENT_ID_PREFIX,
    LINK_SUFFIX,
    MAX_PROPERTIES_DEPTH,
    PAGE_VIEWED,
    AliasCall,
    BatchRequest,
    GroupCall,
    IdentifyCall,
    OrderProperties,
    PageCall,
    ProductProperties,
    ScreenCall,
    SegmentError,
    SurveyAnsweredProperties,
    TrackCall,
    _BatchEnvelope,
    _Call,
    _Properties,
    at_root,
    join,
    validated,
)
from services.ingest.sources.segment_records import RECORDS, Builders
from shared.clock import MAX_CLOCK_AHEAD
from shared.events import (
    MOST_MONEY,
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
    PublishableEvent,
    Source,
    StorefrontEvent,
    SurveyAnswer,
    SurveyAnswered,
    SurveyAnsweredEvent,
)

__all__ = [
    "BATCH_KINDS",
    "AliasCall",
    "BatchRequest",
    "CallKind",
    "GroupCall",
    "IdentifyCall",
    "PageCall",
    "ScreenCall",
    "SegmentError",
    "SurveyAnsweredProperties",
    "TrackCall",
    "batch_to_canonical",
    "batch_to_records",
    "to_canonical",
    "write_key_from_body",
]

CallKind = Literal["identify", "track", "page", "screen", "alias", "group"]

# Each kind's model: it words the errors of an invalid call.
CALL_MODELS: dict[str, type[_Call]] = {
    "identify": IdentifyCall,
    "track": TrackCall,
    "page": PageCall,
    "screen": ScreenCall,
    "group": GroupCall,
    "alias": AliasCall,
}
ZERO = Decimal("0")
# Canonical events of values the reader checked (see construct.py).
_new_CartUpdated = Constructor(CartUpdated)
_new_CartUpdatedEvent = Constructor(CartUpdatedEvent)
_new_Custom = Constructor(Custom)
_new_CustomEvent = Constructor(CustomEvent)
_new_Customer = Constructor(Customer)
_new_CustomerUpserted = Constructor(CustomerUpserted)
_new_CustomerUpsertedEvent = Constructor(CustomerUpsertedEvent)
_new_IdentityLinked = Constructor(IdentityLinked)
_new_IdentityLinkedEvent = Constructor(IdentityLinkedEvent)
_new_LineItem = Constructor(LineItem)
_new_OrderPlaced = Constructor(OrderPlaced)
_new_OrderPlacedEvent = Constructor(OrderPlacedEvent)
_new_OrderRefunded = Constructor(OrderRefunded)
_new_OrderRefundedEvent = Constructor(OrderRefundedEvent)
_new_ProductViewed = Constructor(ProductViewed)
_new_ProductViewedEvent = Constructor(ProductViewedEvent)
_new_SurveyAnswer = Constructor(SurveyAnswer)
_new_SurveyAnswered = Constructor(SurveyAnswered)
_new_SurveyAnsweredEvent = Constructor(SurveyAnsweredEvent)
_EVENT_MODELS: dict[str, Constructor[Any]] = {
    "customer_upserted": _new_CustomerUpsertedEvent,
    "identity_linked": _new_IdentityLinkedEvent,
    "custom": _new_CustomEvent,
    "order_placed": _new_OrderPlacedEvent,
    "order_refunded": _new_OrderRefundedEvent,
    "cart_updated": _new_CartUpdatedEvent,
    "product_viewed": _new_ProductViewedEvent,
    "survey_answered": _new_SurveyAnsweredEvent,
}


def _model_event(
    type_: str,
    store_id: str,
    event_id: str,
    customer: Customer,
    payload: Any,
    occurred_at: datetime,
    received_at: datetime,
) -> StorefrontEvent:
    event: StorefrontEvent = _EVENT_MODELS[type_].of(
        {
            "event_id": event_id,
            "store_id": store_id,
            "customer": customer,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "source": Source.SEGMENT,
            "payload": payload,
        }
    )
    return event


# The canonical models, as the models' `model_construct` would build them (segment_records.RECORDS writes the
# same events straight to bytes).
MODELS = Builders(
    customer=_new_Customer.of,
    customer_upserted=_new_CustomerUpserted,
    identity_linked=_new_IdentityLinked,
    custom=_new_Custom,
    line_item=_new_LineItem,
    order_placed=_new_OrderPlaced,
    order_refunded=_new_OrderRefunded,
    cart_updated=_new_CartUpdated,
    product_viewed=_new_ProductViewed,
    survey_answer=_new_SurveyAnswer,
    survey_answered=_new_SurveyAnswered,
    event=_model_event,
)


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
    """Translate one call (`payload`: the parsed JSON body, whose objects the events may share;
    `received_at`: our aware clock; `checked`: what the caller knows of its raw body); 0 to 2 events.
    Raises SegmentError."""
    if kind not in CALL_MODELS:
        raise SegmentError([("type", f"unknown Segment call {kind!r}")])
    payload = r.named(kind, payload, None)
    if not checked.nul_free and r.has_nul(payload):
        # A NUL somewhere: only the model knows whether it is in a field that is read (refused, named) or
        # in one that is ignored (accepted). Rare: JSON carries NUL only as \u0000.
        try:
            validated(CALL_MODELS[kind], payload, checked=checked)
        except SegmentError as exc:
            raise at_root(exc) from None
    try:
        events: list[StorefrontEvent] = _map_call(kind, payload, store_id, received_at, None, checked, MODELS)
    except SegmentError as exc:
        raise at_root(exc) from None
    return events


def batch_to_canonical(
    payload: Any,
    *,
    store_id: str,
    received_at: datetime,
    max_events: int = 2500,
    checked: Checked = NOTHING_CHECKED,
) -> list[StorefrontEvent]:
    """Translate a batch, all or nothing: one SegmentError lists every invalid call by index."""
    events: list[StorefrontEvent] = _map_batch(payload, store_id, received_at, max_events, checked, MODELS)
    return events


def batch_to_records(
    payload: Any,
    *,
    store_id: str,
    received_at: datetime,
    max_events: int = 2500,
    checked: Checked = NOTHING_CHECKED,
) -> list[PublishableEvent]:
    """`batch_to_canonical`'s events written straight to their message values (segment_records.py): the
    same bytes, keys and errors, without a pydantic model per event. A batch msgspec cannot write (a lone
    surrogate in a custom event's properties, which the routes refuse first) gets the models; so does one
    whose custom event pydantic-core writes (a large float, segment_records.py) and refuses for the same."""
    try:
        events: list[PublishableEvent] = _map_batch(
            payload, store_id, received_at, max_events, checked, RECORDS
        )
    except (
        UnicodeEncodeError,
        msgspec.EncodeError,
        pydantic_core.PydanticSerializationError,
        TypeError,
        OverflowError,
    ):
        return list(
            batch_to_canonical(
                payload, store_id=store_id, received_at=received_at, max_events=max_events, checked=checked
            )
        )
    return events


def _map_batch(
    payload: Any,
    store_id: str,
    received_at: datetime,
    max_events: int,
    checked: Checked,
    build: Builders,
) -> list[Any]:
    try:
        items, shared_context, sent_at = _envelope(payload, checked.nul_free)
    # Not `exc`, as the calls' SegmentError below: compiled (shared/compiled.py), a function's variable has
    # one type, its first (tests/unit/test_compiled_modules.py checks every compiled module for this).
    except r.Invalid as invalid:
        try:
            validated(_BatchEnvelope, payload, checked=checked)
        except SegmentError as error:
            raise at_root(error) from None
        raise _mismatch(invalid) from None
    if len(items) > max_events:
        raise SegmentError([("batch", f"over the limit of {max_events} calls per batch ({len(items)} sent)")])
    events: list[Any] = []
    errors: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        try:
            if type(item) is not dict:
                raise SegmentError([("", "a batch item should be an object")])
            kind = item.get("type")
            if kind not in BATCH_KINDS:
                raise SegmentError([("type", f"should be one of {', '.join(BATCH_KINDS)}")])
            item = r.named(kind, item, index)  # as sent, before the batch's context is merged in
            if shared_context is not None:
                own_context = item.get("context")
                if own_context is None or isinstance(own_context, dict):
                    item = {**item, "context": {**shared_context, **(own_context or {})}}
            events.extend(_map_call(kind, item, store_id, received_at, sent_at, checked, build))
        except SegmentError as exc:
            errors.extend((join(f"batch[{index}]", field), message) for field, message in exc.errors)
    if errors:
        raise SegmentError(errors)
    return events


def _envelope(payload: Any, nul_free: bool) -> tuple[list[Any], dict[str, Any] | None, datetime | None]:
    """`_BatchEnvelope` by hand: the calls, the shared context (keys trimmed) and sentAt."""
    if type(payload) is not dict:
        raise r.Invalid("")
    items = payload.get("batch")
    if type(items) is not list:
        raise r.Invalid("batch")
    shared_context = r.mapping(payload.get("context"), "context")
    sent_at = r.timestamp(payload.get("sentAt"), "sentAt")
    # The envelope's NUL check covers the whole list of calls: a NUL in any of them names `batch`.
    if not nul_free and (r.has_nul(items) or r.has_nul(shared_context)):
        raise r.Invalid("batch")
    return items, shared_context, sent_at


# --- One call: the stages of the old parser, in its order -----------------------------------------------


def _refused(exc: r.Invalid, model: type[Any], data: Any, prefix: str, checked: Checked) -> SegmentError:
    """The reader refused `data`: the SegmentError of `model`, which names every bad field."""
    validated(model, data, prefix, checked=checked)
    return _mismatch(exc)


def _mismatch(exc: r.Invalid) -> SegmentError:
    # The reader refused a value its model accepts: the equivalence test exists to keep this unreachable.
    # Refusing (422) is the safe answer: a client can always be told why, a bad event cannot be unsent.
    return SegmentError([(exc.field, "is not valid")])


def _map_call(
    kind: str,
    payload: Any,
    store_id: str,
    received_at: datetime,
    batch_sent_at: datetime | None,
    checked: Checked,
    build: Builders,
) -> list[Any]:
    try:
        call = r.read_call(kind, payload)
    except r.Invalid as exc:
        raise _refused(exc, CALL_MODELS[kind], payload, "", checked) from None
    common = _Common.of(call, store_id, received_at, batch_sent_at, checked, build)
    if kind == "track":
        return _track(call, common)
    if kind == "identify":
        return _identify(call, common)
    if kind in ("page", "screen"):
        return [_page(call, common)]
    if kind == "alias":
        return [_alias(call, common)]
    return []  # group: validated like any call (identity, time), then nothing to publish


# --- Envelope: identity, time, customer ---------------------------------------------------------------------


@dataclass(slots=True)
class _Common:
    """What every event of one call shares, and what its parts are built with."""

    call: r.Call
    store_id: str
    received_at: datetime
    occurred_at: datetime
    checked: Checked
    build: Builders

    @classmethod
    def of(
        cls,
        call: r.Call,
        store_id: str,
        received_at: datetime,
        batch_sent_at: datetime | None,
        checked: Checked,
        build: Builders,
    ) -> _Common:
        errors = _identity_errors(call, user_id_required=call.kind == "alias")
        occurred_at, time_errors = _occurred_at(call, received_at, batch_sent_at)
        if errors or time_errors:
            raise SegmentError(errors + time_errors)
        return cls(call, store_id, received_at, occurred_at, checked, build)

    def event(self, type_: str, payload: Any, *, email: str | None = None, suffix: str = "") -> Any:
        """An event of this call: its envelope, with `payload`."""
        return self.build.event(
            type_,
            self.store_id,
            f"{EVENT_ID_PREFIX}{self.call.message_id}{suffix}",
            self.build.customer(_customer(self.call, email)),
            payload,
            self.occurred_at,
            self.received_at,
        )

    def properties(
        self, read: Callable[[dict[str, Any]], Any], model: type[Any], data: dict[str, Any]
    ) -> Any:
        """The call's properties read by `read`; errors (by `model`) name `properties.<field>`."""
        try:
            return read(data)
        except r.Invalid as exc:
            raise _refused(exc, model, data, "properties", self.checked) from None

    @property
    def visitor(self) -> str:
        return self.call.anonymous_id or self.call.user_id or ""


def _identity_errors(call: r.Call, *, user_id_required: bool) -> list[tuple[str, str]]:
    if user_id_required and not call.user_id:
        return [("userId", "userId is required")]
    if not (call.user_id or call.anonymous_id):
        return [("userId", "userId or anonymousId is required")]
    return []


def _occurred_at(
    call: r.Call, received_at: datetime, batch_sent_at: datetime | None
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


def _split_name(full_name: str) -> tuple[str, str | None]:
    # The greeting needs the first name; everything after the first word is the family name.
    first, *rest = full_name.split(maxsplit=1)
    return first, rest[0] if rest else None


def _customer(call: r.Call, email_from_properties: str | None) -> dict[str, Any]:
    """The customer's known fields, in the order the Customer model declares them (the order its JSON has).
    None is every field's default: left out, as the validating constructor had them (only the fields given
    are in the model's fields set, and `encode_event` leaves None out)."""
    known: dict[str, Any] = {}
    if call.user_id is not None:
        known["store_customer_id"] = call.user_id
    if call.anonymous_id is not None:
        known["anonymous_id"] = call.anonymous_id
    context = call.context
    # Where a call's traits are, best first: an identify call's own traits describe the user better than
    # the traits echoed in its context.
    own, echoed = call.traits, context.traits if context is not None else None
    first = own or echoed
    locale = timezone = None
    if context is not None:
        locale, timezone = context.locale, context.timezone
    if first is None:
        if email_from_properties:
            known["email"] = email_from_properties
        if locale is not None:
            known["locale"] = locale
        if timezone is not None:
            known["timezone"] = timezone
        return known
    second = echoed if own is not None else None
    first_name, last_name, email = first.first_name, first.last_name, first.email
    phone, birthday, address = first.phone, first.birthday, first.address
    accepts_marketing, full_name = first.accepts_marketing, first.name
    if second is not None:
        first_name = first_name if first_name is not None else second.first_name
        last_name = last_name if last_name is not None else second.last_name
        email = email if email is not None else second.email
        phone = phone if phone is not None else second.phone
        birthday = birthday if birthday is not None else second.birthday
        address = address if address is not None else second.address
        if accepts_marketing is None:
            accepts_marketing = second.accepts_marketing
        full_name = full_name if full_name is not None else second.name
    if first_name is None and last_name is None and full_name:
        first_name, last_name = _split_name(full_name)
    email = email or email_from_properties
    city = country = None
    if address is not None:
        city, country = address.city, address.country
    for field, value in (
        ("email", email),
        ("phone", phone),
        ("first_name", first_name),
        ("last_name", last_name),
        ("locale", locale),
        ("city", city),
        ("country", country),
        ("timezone", timezone),
        ("birthday", birthday),
        ("accepts_marketing", accepts_marketing),
    ):
        if value is not None:
            known[field] = value
    return known


# --- Mappings -----------------------------------------------------------------------------------------------


def _identify(call: r.Call, common: _Common) -> list[Any]:
    build = common.build
    created_at = call.traits.created_at if call.traits is not None else None
    if created_at is None and call.context is not None and call.context.traits is not None:
        created_at = call.context.traits.created_at
    events = [common.event("customer_upserted", build.customer_upserted(created_at=created_at))]
    if call.user_id and call.anonymous_id:
        # The visitor just became known: their anonymous browsing and cart belong to this user now.
        linked = build.identity_linked(previous_id=call.anonymous_id, previous_kind="anonymous_id")
        events.append(common.event("identity_linked", linked, suffix=LINK_SUFFIX))
    return events


def _alias(call: r.Call, common: _Common) -> Any:
    linked = common.build.identity_linked(previous_id=call.previous_id, previous_kind="anonymous_id")
    return common.event("identity_linked", linked)


def _page(call: r.Call, common: _Common) -> Any:
    properties = dict(call.properties or {})
    page = call.context.page if call.context else None
    if page is not None:
        # analytics.js repeats the page in context.page; fill what the properties leave out.
        for key, value in page.known().items():
            properties.setdefault(key, value)
    email = common.properties(r.read_email, _Properties, properties)
    name = f"{PAGE_VIEWED}: {call.name}" if call.name else PAGE_VIEWED
    return common.event("custom", common.build.custom(name=name, properties=_kept(properties)), email=email)


def _track(call: r.Call, common: _Common) -> list[Any]:
    properties = call.properties or {}
    match call.event:
        case "Order Completed":
            order = common.properties(r.read_order_properties, OrderProperties, properties)
            return [_order_completed(order, common)]
        case "Checkout Started" | "Cart Viewed":
            order = common.properties(r.read_order_properties, OrderProperties, properties)
            return [_cart_snapshot(order, common)]
        case "Product Added" | "Product Removed":
            action: Literal["added", "removed"] = "added" if call.event == "Product Added" else "removed"
            product = common.properties(r.read_product_properties, ProductProperties, properties)
            return [_cart_change(product, action, common)]
        case "Product Viewed":
            product = common.properties(r.read_product_properties, ProductProperties, properties)
            return [_product_viewed(product, common)]
        case "Order Refunded" | "Order Cancelled":
            cancelled = call.event == "Order Cancelled"
            order = common.properties(r.read_order_properties, OrderProperties, properties)
            return [_order_refunded(order, cancelled, common)]
        case "Survey Answered":
            survey = common.properties(r.read_survey_properties, SurveyAnsweredProperties, properties)
            return [_survey_answered(survey, common)]
    email = common.properties(r.read_email, _Properties, properties)
    custom = common.build.custom(name=call.event, properties=_kept(properties))
    return [common.event("custom", custom, email=email)]


def _kept(properties: dict[str, Any]) -> dict[str, Any]:
    """A custom event's properties, which it keeps as they came: refused when they nest deeper than the
    events' readers go (see MAX_PROPERTIES_DEPTH)."""
    if r.nests_deeper_than(properties, MAX_PROPERTIES_DEPTH):
        raise SegmentError([("properties", f"nests deeper than {MAX_PROPERTIES_DEPTH} levels")])
    return properties


def _line_item(product: r.Product, path: str, build: Builders) -> Any:
    product_id = product.product_id or product.sku
    if product_id is None:
        raise SegmentError([(join(path, "product_id"), "product_id or sku is required")])
    return build.line_item(
        product_id=product_id,
        sku=product.sku,
        title=product.name,
        category=product.category,
        quantity=product.quantity or 1,
        price=product.price or ZERO,
    )


def _line_items(properties: r.OrderProperties, build: Builders) -> tuple[Any, ...]:
    return tuple(_line_item(p, f"properties.products[{i}]", build) for i, p in enumerate(properties.products))


def _sum(products: list[r.Product], field: str) -> Decimal:
    """What the line items of these products add up to (each the price its line item has, times its
    quantity)."""
    total = sum(((p.price or ZERO) * (p.quantity or 1) for p in products), ZERO)
    if total > MOST_MONEY:
        raise SegmentError([(field, f"the items add up to more than {MOST_MONEY}")])
    return total


def _first_amount(*amounts: Decimal | None) -> Decimal | None:
    return next((amount for amount in amounts if amount is not None), None)


def _order_id(properties: r.OrderProperties) -> str:
    # Order Completed may name the order by its checkout only; a later refund must name it the same way.
    order_id = properties.order_id or properties.checkout_id
    if order_id is None:
        raise SegmentError([("properties.order_id", "order_id or checkout_id is required")])
    return order_id


def _order_completed(properties: r.OrderProperties, common: _Common) -> Any:
    items = _line_items(properties, common.build)
    total = _first_amount(properties.total, properties.revenue)
    order = common.build.order_placed(
        order_id=_order_id(properties),
        total=total if total is not None else _sum(properties.products, "properties.products"),
        currency=properties.currency or DEFAULT_CURRENCY,
        line_items=items,
        cart_id=properties.cart_id or properties.checkout_id,
        discount_codes=(properties.coupon,) if properties.coupon else (),
    )
    return common.event("order_placed", order, email=properties.email)


def _cart_id(explicit: str | None, common: _Common) -> str:
    # Without a cart id the cart is the visitor's: one open cart per visitor is what analytics.js knows.
    return explicit or f"anon:{common.visitor}"


def _recovery_url(url: str | None, common: _Common) -> str | None:
    # analytics.js fires Checkout Started on the checkout page itself: that page is where to come back.
    page = common.call.context.page if common.call.context else None
    return url or (page.url if page else None)


def _cart_snapshot(properties: r.OrderProperties, common: _Common) -> Any:
    items = _line_items(properties, common.build)
    total = _first_amount(properties.value, properties.revenue, properties.total)
    cart = common.build.cart_updated(
        cart_id=_cart_id(properties.cart_id or properties.checkout_id or properties.order_id, common),
        action="snapshot",
        line_items=items,
        total=total if total is not None else _sum(properties.products, "properties.products"),
        currency=properties.currency or DEFAULT_CURRENCY,
        recovery_url=_recovery_url(properties.url, common),
    )
    return common.event("cart_updated", cart, email=properties.email)


def _cart_change(
    properties: r.ProductProperties, action: Literal["added", "removed"], common: _Common
) -> Any:
    item = _line_item(properties.product, "properties", common.build)
    change = common.build.cart_updated(
        cart_id=_cart_id(properties.cart_id, common),
        action=action,
        line_items=(item,),
        # The value of the change, not of the cart: a delta's consumer knows the rest of the cart.
        total=_sum([properties.product], "properties.price"),
        currency=properties.currency or DEFAULT_CURRENCY,
    )
    return common.event("cart_updated", change, email=properties.email)


def _product_viewed(properties: r.ProductProperties, common: _Common) -> Any:
    viewed = common.build.product_viewed(product=_line_item(properties.product, "properties", common.build))
    return common.event("product_viewed", viewed, email=properties.email)


def _order_refunded(properties: r.OrderProperties, cancelled: bool, common: _Common) -> Any:
    order_id = _order_id(properties)
    amount = _first_amount(properties.total, properties.revenue)
    # Segment's documented full refund names only the order ("For full refunds, fire this event whenever an
    # order/transaction gets refunded": `analytics.track('Order Refunded', {order_id})`, the Google Analytics
    # destination's docs): the whole order, whatever its total (its amount, of no products, stays 0).
    in_full = amount is None and not properties.products and not cancelled
    if amount is None:
        # The line items are built for their checks only (a product without an id is refused).
        _line_items(properties, common.build)
        amount = _sum(properties.products, "properties.products")
    refund = common.build.order_refunded(
        order_id=order_id,
        amount=amount,
        currency=properties.currency or DEFAULT_CURRENCY,
        cancelled=cancelled,
        in_full=True if in_full else None,
    )
    return common.event("order_refunded", refund, email=properties.email)


def _survey_answered(properties: r.SurveyProperties, common: _Common) -> Any:
    build = common.build
    survey = build.survey_answered(
        survey_id=properties.survey_id,
        answers=tuple(
            build.survey_answer(statement_id=a.statement_id, scale=a.scale, agree=a.agree, score=a.score)
            for a in properties.answers
        ),
        csat=properties.csat,
        ces=properties.ces,
        nps=properties.nps,
    )
    return common.event("survey_answered", survey, email=properties.email)

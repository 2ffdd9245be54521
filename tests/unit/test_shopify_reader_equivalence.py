"""Issue 14, "Same answers": Shopify webhooks are read by hand (sources/shopify_reader.py), falling back to
the pydantic payload models for anything unusual. The mapper as it was before is kept, frozen, in
tests/reference/shopify_mapper_v1.py; every payload generated here (the examples of each topic with fields
replaced by odd values, removed, or nested wrongly) goes through both, and both must give the same answer:
the same event (byte for byte as published, the same Kafka key, the same fields), no event, or the same
errors (every field named, with the same message).

Since round 20 a signed webhook whose values do not fit the canonical event is kept with them made to fit
(sources/fitting.py), its NUL characters removed, and an order that names nobody is acknowledged without an
event, where the old mapper refused all three. So: the hand reader answers exactly as today's models do;
and today's mapper answers as the old one did, except where the old one refused only what is now made to
fit, removed or names nobody. Since round 21 an order also carries its version (`updated_at`), which the
old mapper left out: it is taken off today's event before the two are compared. Since round 23 a line's
`current_quantity` (what an order edit left of it) is read, which the old mapper ignored: the comparison
with the old mapper maps the body without it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services.ingest.body import parse_json
from services.ingest.sources import shopify as new
from services.ingest.sources import shopify_reader, shopify_structs
from services.ingest.sources.base import NOTHING_CHECKED, Checked
from shared.events import OrderPlacedEvent, StorefrontEvent, encode_event
from shared.web import ApiError, validation_errors
from tests.examples import source_example
from tests.reference import shopify_mapper_v1 as old

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
TEMPLATES = {
    "orders/create": "orders.create__order_with_customer",
    "orders/updated": "orders.updated__item_removed_in_edit",
    "orders/cancelled": "orders.cancelled__cancelled_order",
    "refunds/create": "refunds.create__partial_refund",
    "checkouts/create": "checkouts.create__abandoned_checkout",
    "checkouts/update": "checkouts.create__abandoned_checkout",
    "customers/create": "customers.create__new_customer",
    "customers/update": "customers.update__consent_given",
}
ADDRESS = ("city", "country", "country_code")
CUSTOMER = (
    "id", "email", "first_name", "last_name", "phone", "locale", "created_at", "updated_at",
    "accepts_marketing", "accepts_marketing_updated_at", "email_marketing_consent",
    "email_marketing_consent.state", "email_marketing_consent.consent_updated_at", "default_address",
    *(f"default_address.{f}" for f in ADDRESS),
)  # fmt: skip
LINE_ITEM = ("id", "key", "product_id", "variant_id", "sku", "title", "quantity", "current_quantity", "price")
ORDER = (
    "id", "email", "created_at", "updated_at", "cancelled_at", "currency", "total_price", "customer_locale",
    "cart_token", "checkout_token", "line_items", "discount_codes", "discount_codes.0",
    "discount_codes.0.code",
    "customer", "shipping_address", "billing_address",
    *(f"customer.{f}" for f in CUSTOMER), *(f"line_items.{i}.{f}" for i in (0, 1) for f in LINE_ITEM),
    *(f"shipping_address.{f}" for f in ADDRESS), *(f"billing_address.{f}" for f in ADDRESS),
)  # fmt: skip
CHECKOUT = (
    "token", "cart_token", "email", "created_at", "updated_at", "completed_at", "currency", "total_price",
    "abandoned_checkout_url", "customer_locale", "buyer_accepts_marketing", "line_items", "customer",
    "shipping_address", "billing_address",
    *(f"customer.{f}" for f in CUSTOMER), *(f"line_items.{i}.{f}" for i in (0, 1) for f in LINE_ITEM),
    *(f"shipping_address.{f}" for f in ADDRESS), *(f"billing_address.{f}" for f in ADDRESS),
)  # fmt: skip
REFUND = (
    "id", "order_id", "created_at", "transactions", "transactions.0", "transactions.1",
    *(f"transactions.{i}.{f}" for i in (0, 1) for f in ("kind", "status", "amount", "currency")),
)  # fmt: skip
PATHS = {
    "orders/create": ORDER,
    "orders/updated": ORDER,
    "orders/cancelled": ORDER,
    "refunds/create": REFUND,
    "checkouts/create": CHECKOUT,
    "checkouts/update": CHECKOUT,
    "customers/create": CUSTOMER,
    "customers/update": CUSTOMER,
}

# Characters where notions of whitespace or case differ, NUL, a lone surrogate, wide characters.
ODD = st.sampled_from(
    ["\x00", "\x1c", "\x1f", "\x85", "\xa0", "\u3000", "\u200b", "\udf58", "é", "İ", "ẞ", "😀", " ", "\n"]
)
TEXT = st.text(max_size=8) | st.lists(ODD | st.sampled_from("ab1 @.-_"), max_size=6).map("".join)
LONG = st.tuples(
    st.sampled_from([40, 41, 64, 65, 200, 201, 255, 256, 320, 321, 1000, 1001, 2000, 2001]),
    st.sampled_from(["a", " ", "é", "1"]),
).map(lambda t: "x" * (t[0] - 1) + t[1])
OFFSET = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
TIMES = (
    st.datetimes(timezones=st.none() | st.just(UTC) | OFFSET).map(datetime.isoformat)
    | st.datetimes(min_value=datetime(2026, 11, 1), max_value=datetime(2026, 11, 25)).map(
        lambda d: d.isoformat(timespec="milliseconds") + "Z"
    )
    | st.sampled_from(
        [
            "2026-11-21T10:10:40Z", "2026-11-21T10:10:40.012Z", "2026-11-21T10:10:40.1234567Z",
            "2026-11-21T10:10:40+05:30", "2026-11-21T10:10:40-00:00", "2026-11-21 10:10:40Z", "2026-11-21",
            "2026-11-21T10:10:40z", "2026-11-21t10:10:40Z", "2026-11-21T10:10:40", "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z", "2026-11-21T24:00:00Z", "2026-11-21T23:59:60Z", "0000-01-01T00:00:00Z",
            "2026-11-21T10:10:40+24:00", "2026-11-21T10:10:40+23:59", "2026-11-21T10:10:40+05",
            "2026-11-21T10:10:40+0530", "2026-11-21T10:10:40.Z", "1763719840", " 2026-11-21T10:10:40Z",
            "2026-11-21T10:10:40Z ", "9999-12-31T23:59:59-23:59", "2026-11-24T15:00:01Z", 1763719840,
            1763719840.5, "yesterday", "",
        ]
    )
)  # fmt: skip
MONEY = st.decimals(min_value=0, max_value=10**13, places=2).map(str) | st.sampled_from(
    [
        "199.00", "0", "0.00", "1", "1.5", "1.505", "-1.00", "-0", "00.10", "01", "1e3", "1E+2", " 1.00",
        "1,00", "NaN", "Infinity", "999999999999.99", "1000000000000.00", "12345678901234", "1.", ".5", "",
        199, 199.0, 1.005, -1, True,
    ]
)  # fmt: skip
EMAILS = st.sampled_from(
    [
        "Ann@Example.com ", "", "  ", "bob@example.org", "not-an-email", "a@b", "İ@example.com",
        "x" * 310 + "@example.com", "a\x1c@example.com", "ẞ@example.com", "a@b.c\n", "\u3000", 12,
    ]
)  # fmt: skip
LOCALES = st.sampled_from(
    ["en", "pt_BR", "en-US", " de ", "", "xx-invalid-", "zh-Hant-TW", "e" * 36, "\xa0", 1]
)
CURRENCIES = st.sampled_from(["USD", "EUR", "usd", "US", "USDX", "USD\n", "", "€UR", 1])
INTS = st.sampled_from([0, 1, -1, 2, 10**6, 10**6 + 1, 10**20, 10**300, True, False, 1.0, 1.5, "123", "x"])
# Copied per draw: a shared {} put in two places would nest the body in itself.
STRUCTURE: st.SearchStrategy[Any] = st.sampled_from([None, {}, [], [{}], "x", [None], 0]).map(copy.deepcopy)
ANY = st.none() | st.booleans() | st.integers() | st.floats() | TEXT | LONG | STRUCTURE
DELETE = object()


def _pool(path: str) -> st.SearchStrategy[Any]:
    name = path.rsplit(".", 1)[-1]
    if name.endswith("_at"):
        special = TIMES
    elif name in ("price", "total_price", "amount"):
        special = MONEY
    elif name == "email":
        special = EMAILS
    elif name in ("locale", "customer_locale"):
        special = LOCALES
    elif name == "currency":
        special = CURRENCIES
    elif name in ("id", "product_id", "variant_id", "order_id", "quantity", "current_quantity"):
        special = INTS
    elif name == "state":
        special = st.sampled_from(["subscribed", "not_subscribed", "Subscribed", None])
    elif name == "kind":
        special = st.sampled_from(["refund", "sale", "void", ""])
    elif name == "status":
        special = st.sampled_from(["success", "failure", None, "pending"])
    else:
        special = TEXT | LONG
    return special | special | ANY | st.just(DELETE)


def _put(body: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = body
    for part in parents:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return
    if isinstance(node, dict):
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node) and value is not DELETE:
        node[int(last)] = value


@st.composite
def webhooks(draw: st.DrawFn) -> tuple[str, Any]:
    topic = draw(st.sampled_from(sorted(TEMPLATES)))
    body = copy.deepcopy(source_example("shopify", TEMPLATES[topic]))
    for path in draw(st.lists(st.sampled_from(PATHS[topic]), max_size=4)):
        _put(body, path, draw(_pool(path)))
    return topic, body


def _outcome(map_: Callable[[], StorefrontEvent | None]) -> tuple[str, Any]:
    try:
        event = map_()
    except ValidationError as exc:
        return "errors", validation_errors(exc.errors())
    if event is None:
        return "nothing", None
    return "event", (_encoded(event), event.partition_key, event.model_dump())


def _encoded(event: StorefrontEvent) -> bytes | str:
    try:
        return encode_event(event)
    except ValueError as exc:  # a lone surrogate (the route refuses those bodies before mapping them)
        return f"unencodable: {exc}"


def _checks(body: Any) -> list[Checked]:
    """Without knowledge of the raw body (every field searched for NUL), and as the route calls it: of the
    body with its non-ASCII characters escaped, and written as UTF-8 (where it can be: no lone surrogate)."""
    checks = [NOTHING_CHECKED, Checked.body(json.dumps(body).encode())]
    with contextlib.suppress(UnicodeEncodeError):
        checks.append(Checked.body(json.dumps(body, ensure_ascii=False).encode()))
    return checks


# The fields whose values sources/fitting.py makes fit (clipped, left out, capped or rounded to the cent),
# as the old mapper's errors name them.
FITTED = frozenset(
    {
        "first_name", "last_name", "phone", "city", "country", "email", "locale", "customer_locale", "sku",
        "title", "quantity", "price", "total", "total_price", "amount", "cart_id", "discount_codes",
        "recovery_url",
    }
)  # fmt: skip


def _fitted(error: Any) -> bool:
    # An order that names nobody is now acknowledged without an event (shopify._names_someone).
    nobody = error.message.endswith(
        "customer needs store_customer_id, anonymous_id, email or placed_order_id"
    )
    nul = error.message.endswith("must not contain NUL (\\u0000) characters")  # removed now
    return nobody or nul or bool(set(re.split(r"[.\[\]]", error.field)) & FITTED)


def _as_before(before: tuple[str, Any], after: tuple[str, Any]) -> None:
    """Today's answer is the old one, or the old one refused values that are now made to fit: those errors
    are gone, and any error it did not name lies past the point where they stopped it."""
    if after == before:
        return
    assert before[0] == "errors", (before, after)
    still = after[1] if after[0] == "errors" else []
    gone = [e for e in before[1] if e not in still]
    assert gone, (before, after)
    assert all(_fitted(e) for e in gone), (before, after)
    if any(e not in before[1] for e in still):
        assert all(_fitted(e) for e in before[1]), (before, after)


def _same(topic: str, body: Any, *, event_id: str = "shopify:ev-1", store_id: str = "demo") -> None:
    for checked in _checks(body):
        arguments: dict[str, Any] = {
            "store_id": store_id,
            "event_id": event_id,
            "received_at": NOW,
            "checked": checked,
        }
        before = _outcome(partial(old.to_canonical, topic, body, **arguments))
        after = _outcome(partial(new.to_canonical, topic, body, **arguments))
        assert after == _outcome(partial(new._by_models, topic, body, **arguments))
        _as_before(before, _outcome(partial(_mapped_as_before, topic, body, **arguments)))


def _mapped_as_before(topic: str, body: Any, **arguments: Any) -> StorefrontEvent | None:
    return _without_version(new.to_canonical(topic, _without_current_quantities(body), **arguments))


def _without_current_quantities(body: Any) -> Any:
    """The body as the old mapper read it: without what an edit left of each line (new since round 23)."""
    if not isinstance(body, dict) or not isinstance(body.get("line_items"), list):
        return body
    lines = [
        {k: v for k, v in line.items() if k != "current_quantity"} if isinstance(line, dict) else line
        for line in body["line_items"]
    ]
    return body | {"line_items": lines}


def _without_version(event: StorefrontEvent | None) -> StorefrontEvent | None:
    """The event as the old mapper made it: an order's `updated_at` (its version) is new since round 21."""
    if not isinstance(event, OrderPlacedEvent):
        return event
    return event.model_copy(update={"payload": event.payload.model_copy(update={"updated_at": None})})


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(webhook=webhooks())
@example(webhook=("orders/create", {"id": 1, "created_at": "2026-11-21T10:10:40Z", "currency": "USD",
                                     "total_price": "1.00", "email": "a@b.com", "note": "\x00"}))  # fmt: skip
@example(webhook=("checkouts/create", {"token": "t", "created_at": "2026-11-21T10:10:40Z",
                                        "currency": "USD", "total_price": "1.00"}))  # fmt: skip
@example(webhook=("orders/create", {"id": 1, "created_at": "2026-11-21T10:10:40Z", "currency": "USD",
                                     "total_price": "1.00"}))  # fmt: skip
@example(webhook=("refunds/create", {"id": 1, "order_id": 2, "created_at": "2026-11-21T10:10:40Z",
                                     "transactions": [{"kind": "refund", "amount": "999999999999.99"},
                                                      {"kind": "refund", "amount": "0.01"}]}))  # fmt: skip
@example(webhook=("customers/create", []))
def test_a_webhook_gets_the_same_answer_from_both_mappers(webhook: tuple[str, Any]) -> None:
    _same(*webhook)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=st.sampled_from(sorted(TEMPLATES)),
    event_id=st.sampled_from(["shopify:", "shopify:" + "x" * 192, "shopify:" + "x" * 193, "shopify:\x00"]),
    store_id=st.sampled_from(["demo", "Demo", "-demo", "d" * 64, "d" * 65, "demo\n"]),
)
def test_the_envelope_is_checked_as_before(topic: str, event_id: str, store_id: str) -> None:
    _same(topic, source_example("shopify", TEMPLATES[topic]), event_id=event_id, store_id=store_id)


def test_the_examples_take_the_hand_reader() -> None:
    """The fast path is the usual one: every example of a topic it knows is read without the models."""
    for topic, name in TEMPLATES.items():
        body = source_example("shopify", name)
        event = shopify_reader.read(topic, body, store_id="demo", event_id="shopify:ev-1", received_at=NOW)
        assert event is not None or topic.startswith("checkouts/")
        _same(topic, body)


# -- from the raw body: decoded straight into msgspec Structs (shopify_reader.read_body) -----------------

RAW_ODDITIES = st.sampled_from(
    [
        b"",
        b'"note":"\xff",',  # not UTF-8, in a field nobody reads
        b'"note":"\xed\xa0\x80",',  # a surrogate written as UTF-8 (CESU-8)
        b'"note":"caf\xc3\xa9",',  # UTF-8 that is fine
        b'"note":"\\u00e9\\ud83d\\ude00",',  # escapes, a surrogate pair among them
        b'"note":"\\udf58",',
        b'"note":"\\u0000",',
        b'"note":' + b"[" * 3000 + b"]" * 3000 + b",",
        b'"note":1e400,',
        b'"note":NaN,',
        b'"note":"a\tb",',  # a raw control character: not JSON
        b'"id":1,"id":2,',  # a key twice
        b'"customer":null,"customer":{"id":5,"email":"dup@example.com"},',
        b'"total_price":"1.00","total_price":"x",',
        b'"note":{"a" 1},',
    ]
)


@st.composite
def raw_webhooks(draw: st.DrawFn) -> tuple[str, bytes]:
    topic, body = draw(webhooks())
    try:
        raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    except UnicodeEncodeError:
        raw = json.dumps(body).encode()
    if raw.startswith(b"{") and len(raw) > 2:
        raw = b"{" + draw(st.just(b"") | RAW_ODDITIES) + raw[1:]
    return topic, draw(st.sampled_from([raw, raw, raw, b"\xef\xbb\xbf" + raw, raw[:-1], b" " + raw + b"\n"]))


def _body_outcome(map_: Callable[[], StorefrontEvent | None]) -> tuple[str, Any]:
    try:
        return _outcome(map_)
    except ApiError as exc:
        return "refused", (exc.status_code, exc.body)


def _old_from_body(topic: str, raw: bytes, **arguments: Any) -> StorefrontEvent | None:
    return old.to_canonical(topic, parse_json(raw), **arguments)


def _models_from_body(topic: str, raw: bytes, **arguments: Any) -> StorefrontEvent | None:
    return new._by_models(topic, parse_json(raw), **arguments)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(webhook=raw_webhooks())
def test_a_raw_body_gets_the_same_answer_as_when_parsed_first(webhook: tuple[str, bytes]) -> None:
    topic, raw = webhook
    arguments: dict[str, Any] = {
        "store_id": "demo",
        "event_id": "shopify:ev-1",
        "received_at": NOW,
        "checked": Checked.body(raw),
    }
    before = _body_outcome(partial(_old_from_body, topic, raw, **arguments))
    after = _body_outcome(partial(new.body_to_canonical, topic, raw, parse_json, **arguments))
    assert after == _body_outcome(partial(_models_from_body, topic, raw, **arguments))
    stripped = _parsed_without_current_quantities(raw)
    if stripped is not None:  # compared with the old mapper as the parsed body it ignored them in
        before = _outcome(partial(old.to_canonical, topic, stripped, **arguments))
        _as_before(before, _outcome(partial(_mapped_as_before, topic, stripped, **arguments)))
        return
    _as_before(
        before,
        _body_outcome(lambda: _without_version(new.body_to_canonical(topic, raw, parse_json, **arguments))),
    )


def _parsed_without_current_quantities(raw: bytes) -> Any:
    """The parsed body without its lines' `current_quantity`, if it parses and has one; else None."""
    try:
        body = parse_json(raw)
    except ApiError:
        return None
    stripped = _without_current_quantities(body)
    return None if stripped == body else stripped


def test_the_examples_are_read_from_their_bytes() -> None:
    for topic, name in TEMPLATES.items():
        raw = json.dumps(source_example("shopify", name)).encode()
        event = shopify_reader.read_body(
            topic, raw, store_id="demo", event_id="shopify:ev-1", received_at=NOW
        )
        assert event is not None or topic.startswith("checkouts/")


# -- the Structs a raw body is decoded into hold every field the payload models read -----------------------
# shopify_structs.py declares the models' fields again, as msgspec Structs: a field added to a model and not
# to its Struct would be missing from every body the hand reader reads, silently, while the models, which
# parse the whole body for the bodies the reader leaves to them, still read it.

STRUCT_OF_MODEL: dict[type[BaseModel], type[msgspec.Struct]] = {
    new.ShopifyAddress: shopify_structs._Address,
    new.ShopifyMarketingConsent: shopify_structs._Consent,
    new.ShopifyCustomer: shopify_structs._Customer,
    new.ShopifyLineItem: shopify_structs._LineItem,
    new.ShopifyDiscountCode: shopify_structs._DiscountCode,
    new.ShopifyOrder: shopify_structs._Order,
    new.ShopifyCheckout: shopify_structs._Checkout,
    new.ShopifyTransaction: shopify_structs._Transaction,
    new.ShopifyRefund: shopify_structs._Refund,
}


def _classes_in(annotation: Any) -> set[type]:
    """The model or Struct classes an annotation names, through unions, optionals and sequences."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel | msgspec.Struct):
        return {annotation}
    return {c for arg in typing.get_args(annotation) for c in _classes_in(arg)}


@pytest.mark.parametrize("model", list(STRUCT_OF_MODEL), ids=lambda m: m.__name__)
def test_a_struct_holds_each_field_of_its_model_by_the_same_name(model: type[BaseModel]) -> None:
    struct = STRUCT_OF_MODEL[model]
    assert not any(f.alias or f.validation_alias for f in model.model_fields.values())  # a body's keys
    assert struct.__struct_fields__ == tuple(model.model_fields)
    hints = typing.get_type_hints(struct)
    for name, field in model.model_fields.items():
        nested = {STRUCT_OF_MODEL[typing.cast(type[BaseModel], m)] for m in _classes_in(field.annotation)}
        assert _classes_in(hints[name]) == nested, name


def test_each_topic_is_decoded_into_the_struct_of_the_model_that_maps_it() -> None:
    model_of_topic: dict[str, type[BaseModel]] = {
        **dict.fromkeys((*new.ORDER_TOPICS, "orders/cancelled"), new.ShopifyOrder),
        "refunds/create": new.ShopifyRefund,
        **dict.fromkeys(new.CHECKOUT_TOPICS, new.ShopifyCheckout),
        **dict.fromkeys(new.CUSTOMER_TOPICS, new.ShopifyCustomer),
    }
    assert model_of_topic.keys() == shopify_structs.DECODERS.keys()
    for topic, model in model_of_topic.items():
        assert shopify_structs.DECODERS[topic].type is STRUCT_OF_MODEL[model], topic

"""A Segment batch's events are written straight to their Kafka value bytes (segment_records.py), not built as
pydantic models and serialised; the bytes on `storefront-events` must not change. Each part the mapping
builds is built both ways from the same generated fields (odd values included: any Unicode, big and
negative decimals, datetimes with offsets and microseconds, empty tuples, None, floats of every size in
a custom event's properties), and every Segment batch of the parser equivalence test's strategies is
mapped both ways: the same bytes, Kafka key, type, time and source, or the same errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic_core import TzInfo

from bench.workload import Storefront, segment_batch_body
from services.ingest.sources import segment
from services.ingest.sources.base import NOTHING_CHECKED, Checked
from services.ingest.sources.segment import MODELS
from services.ingest.sources.segment_models import SegmentError
from services.ingest.sources.segment_records import RECORDS
from shared.events import (
    Customer,
    EncodedEvent,
    PublishableEvent,
    StorefrontEvent,
    SurveyScale,
    encode_event,
)
from tests.unit.test_segment_parser_equivalence import BATCH, NOW, VALID_CALL

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ["é", "😀", "\u2028", "\x7f", "\x1f", '"\\/', "\n\t", "İ"]
)
ID = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10)
DECIMAL = st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Decimal("0"), Decimal("-0.00"), Decimal("1E+2"), Decimal("123456789012345678901234.56"), Decimal("1E-7")]
)
OFFSETS = st.sampled_from(
    [
        UTC,
        TzInfo(0),
        TzInfo(19800),
        TzInfo(-3600),
        TzInfo(19815),
        timezone(timedelta(hours=-12)),
        timezone(timedelta(hours=14)),
    ]
)
DATETIME = st.datetimes(timezones=OFFSETS)
FLOATS = st.floats() | st.sampled_from([1e20, 1e16, 1.5e300, -2e22, 1e-7, 0.1, -0.0, 1e15, 12345678.9])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOATS | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=12,
)
OPTIONAL_TEXT = st.none() | TEXT

CUSTOMER_VALUES: dict[str, Any] = {
    "store_customer_id": ID,
    "anonymous_id": ID,
    "email": TEXT,
    "phone": TEXT,
    "first_name": TEXT,
    "last_name": TEXT,
    "locale": st.sampled_from(["en", "pt-BR", "zh-Hant-TW"]),
    "city": TEXT,
    "country": TEXT,
    "timezone": TEXT,
    "birthday": st.dates(),
    "accepts_marketing": st.booleans(),
}


@st.composite
def known_customers(draw: st.DrawFn) -> dict[str, Any]:
    """A customer's known fields as the mapping gives them: in the model's order, no None, an identifier."""
    known: dict[str, Any] = {}
    for name in Customer.model_fields:
        strategy = CUSTOMER_VALUES.get(name)
        if strategy is not None and draw(st.booleans()):
            known[name] = draw(strategy)
    if not known.get("store_customer_id") and not known.get("anonymous_id"):
        known = {"anonymous_id": draw(ID), **known}
        known = {name: known[name] for name in Customer.model_fields if name in known}
    return known


LINE_ITEM = st.fixed_dictionaries(
    {
        "product_id": ID,
        "sku": OPTIONAL_TEXT,
        "title": OPTIONAL_TEXT,
        "category": OPTIONAL_TEXT,
        "quantity": st.integers(1, 1_000_000),
        "price": DECIMAL,
    }
)
ANSWER = st.fixed_dictionaries(
    {
        "statement_id": ID,
        "scale": st.none() | st.sampled_from(list(SurveyScale)),
        "agree": st.none() | st.booleans(),
        "score": st.none() | st.integers(1, 5),
    }
)
CURRENCY = st.sampled_from(["USD", "EUR", "BRL"])


def _payloads() -> st.SearchStrategy[tuple[str, str, dict[str, Any], list[tuple[str, str]]]]:
    """(event type, builder, its fields, nested parts: field -> builder of each item)."""
    items = st.lists(LINE_ITEM, max_size=3)
    return st.one_of(
        st.tuples(
            st.just("customer_upserted"),
            st.just("customer_upserted"),
            st.fixed_dictionaries({"created_at": st.none() | DATETIME}),
            st.just([]),
        ),
        st.tuples(
            st.just("identity_linked"),
            st.just("identity_linked"),
            st.fixed_dictionaries({"previous_id": ID, "previous_kind": st.just("anonymous_id")}),
            st.just([]),
        ),
        st.tuples(
            st.just("custom"),
            st.just("custom"),
            st.fixed_dictionaries({"name": ID, "properties": st.dictionaries(TEXT, JSON, max_size=5)}),
            st.just([]),
        ),
        st.tuples(
            st.just("order_placed"),
            st.just("order_placed"),
            st.fixed_dictionaries(
                {
                    "order_id": ID,
                    "total": DECIMAL,
                    "currency": CURRENCY,
                    "line_items": items,
                    "cart_id": st.none() | ID,
                    "discount_codes": st.lists(ID, max_size=2).map(tuple),
                }
            ),
            st.just([("line_items", "line_item")]),
        ),
        st.tuples(
            st.just("order_refunded"),
            st.just("order_refunded"),
            st.fixed_dictionaries(
                {"order_id": ID, "amount": DECIMAL, "currency": CURRENCY, "cancelled": st.booleans()}
            ),
            st.just([]),
        ),
        st.tuples(
            st.just("cart_updated"),
            st.just("cart_updated"),
            st.fixed_dictionaries(
                {
                    "cart_id": ID,
                    "action": st.sampled_from(["snapshot", "added", "removed"]),
                    "line_items": items,
                    "total": DECIMAL,
                    "currency": CURRENCY,
                },
                optional={"recovery_url": st.none() | TEXT},
            ),
            st.just([("line_items", "line_item")]),
        ),
        st.tuples(
            st.just("product_viewed"),
            st.just("product_viewed"),
            st.fixed_dictionaries({"product": LINE_ITEM}),
            st.just([("product", "line_item")]),
        ),
        st.tuples(
            st.just("survey_answered"),
            st.just("survey_answered"),
            st.fixed_dictionaries(
                {
                    "survey_id": ID,
                    "answers": st.lists(ANSWER, max_size=3),
                    "csat": st.none() | st.integers(1, 5),
                    "ces": st.none() | st.integers(1, 7),
                    "nps": st.none() | st.integers(0, 10),
                }
            ),
            st.just([("answers", "survey_answer")]),
        ),
    )


def _built(builders: Any, builder: str, fields: dict[str, Any], nested: list[tuple[str, str]]) -> Any:
    """The payload built by `builders`, its nested parts first (as the mapping builds them)."""
    values = dict(fields)
    for field, part in nested:
        build = getattr(builders, part)
        value = values[field]
        values[field] = tuple(build(**item) for item in value) if isinstance(value, list) else build(**value)
    return getattr(builders, builder)(**values)


def _published(event: PublishableEvent) -> tuple[Any, ...]:
    try:
        value: bytes | str = encode_event(event)
    except ValueError as exc:  # a lone surrogate in a custom event's properties: the models pass it on
        value = f"unencodable: {exc}"
    return (value, event.partition_key, event.type, event.occurred_at, event.source)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=_payloads(),
    customer=known_customers(),
    event_id=ID,
    store_id=st.sampled_from(["demo", "a-store_2"]),
    occurred_at=DATETIME,
    received_at=DATETIME,
)
@example(
    payload=("custom", "custom", {"name": "x", "properties": {"v": 1e20, "w": [1e16, float("nan")]}}, []),
    customer={"anonymous_id": "a"},
    event_id="e",
    store_id="demo",
    occurred_at=datetime(2026, 11, 21, 10, 10, 40, 12000, tzinfo=TzInfo(19800)),
    received_at=datetime(2026, 11, 21, tzinfo=UTC),
)
def test_each_event_a_call_makes_is_written_as_its_model_serialises(
    payload: tuple[str, str, dict[str, Any], list[tuple[str, str]]],
    customer: dict[str, Any],
    event_id: str,
    store_id: str,
    occurred_at: datetime,
    received_at: datetime,
) -> None:
    type_, builder, fields, nested = payload
    model = MODELS.event(
        type_,
        store_id,
        event_id,
        MODELS.customer(customer),
        _built(MODELS, builder, fields, nested),
        occurred_at,
        received_at,
    )
    record = RECORDS.event(
        type_,
        store_id,
        event_id,
        RECORDS.customer(customer),
        _built(RECORDS, builder, fields, nested),
        occurred_at,
        received_at,
    )
    assert isinstance(record, EncodedEvent)
    assert _published(record) == _published(model)
    assert encode_event(model) == model.model_dump_json(exclude_none=True).encode()


def _outcome(parse: Any) -> tuple[str, Any]:
    try:
        events = parse()
    except SegmentError as exc:
        return "errors", exc.errors
    return "events", [_published(e) for e in events]


def _checks(body: Any) -> list[Checked]:
    try:
        raw = json.dumps(body).encode()
    except (TypeError, ValueError):
        return [NOTHING_CHECKED]
    return [NOTHING_CHECKED, Checked.body(raw)]


def _same_batch(body: Any) -> None:
    for checked in _checks(body):
        arguments: dict[str, Any] = {
            "store_id": "demo",
            "received_at": NOW,
            "max_events": 3,
            "checked": checked,
        }
        models = _outcome(partial(segment.batch_to_canonical, body, **arguments))
        records = _outcome(partial(segment.batch_to_records, body, **arguments))
        assert records == models


_CALL = {"type": "track", "messageId": "m", "userId": "u", "event": "X"}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BATCH | st.fixed_dictionaries({"batch": st.lists(VALID_CALL, min_size=1, max_size=3)}))
@example(body={"batch": [{**_CALL, "properties": {"f": 1e20, "g": [1e-7, "1e5"]}}]})
def test_a_batch_gets_the_same_bytes_and_errors_either_way(body: Any) -> None:
    _same_batch(body)


@pytest.mark.parametrize(
    "properties",
    [{"a": "\udf58"}, {"f": 1e20, "a": "\udf58"}],
    ids=["msgspec writes it", "pydantic-core writes it (a large float)"],
)
def test_a_batch_msgspec_cannot_write_gets_the_models(properties: dict[str, Any]) -> None:
    body = {"batch": [{**_CALL, "properties": properties}]}
    [event] = segment.batch_to_records(body, store_id="demo", received_at=NOW)
    assert not isinstance(event, EncodedEvent)
    with pytest.raises(ValueError, match="surrogates not allowed"):
        encode_event(event)


def test_the_benchmark_batches_are_written_as_the_models_serialise() -> None:
    calls = Storefront(seed=5, run="records").segment_calls(2000)
    types: set[str] = set()
    for start in range(0, len(calls), 100):
        raw = segment_batch_body(calls[start : start + 100])
        body = json.loads(raw)
        now = datetime.now(UTC)
        arguments: dict[str, Any] = {"store_id": "demo", "received_at": now, "checked": Checked.body(raw)}
        models: list[StorefrontEvent] = segment.batch_to_canonical(body, **arguments)
        records = segment.batch_to_records(body, **arguments)
        assert all(isinstance(e, EncodedEvent) for e in records)
        assert [_published(e) for e in records] == [_published(e) for e in models]
        types.update(e.type for e in records)
    assert types >= {"custom", "product_viewed", "cart_updated", "order_placed", "customer_upserted"}


@pytest.mark.parametrize(
    "properties",
    [{"a": 1}, {"f": 1e20}],
    ids=["msgspec writes it", "pydantic-core writes it (a large float)"],
)
def test_an_event_written_straight_to_bytes_begins_with_its_type(properties: dict[str, Any]) -> None:
    # As the models write it (shared/events.py's envelope): a decoder that picks the event's class by its
    # type reads the message once.
    body = {"batch": [{**_CALL, "properties": properties}]}
    [event] = segment.batch_to_records(body, store_id="demo", received_at=NOW)
    assert isinstance(event, EncodedEvent)
    assert event.value.startswith(b'{"type":"custom","schema_version":1,')

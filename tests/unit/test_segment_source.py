from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from services.ingest.sources import segment
from services.ingest.sources import segment_reader as r
from shared.events import (
    CartUpdatedEvent,
    CustomerUpsertedEvent,
    CustomEvent,
    IdentityLinkedEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ProductViewedEvent,
    Source,
    StorefrontEvent,
    SurveyAnsweredEvent,
    SurveyScale,
    decode_event,
    encode_event,
)
from tests.examples import source_example, source_examples

NOW = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
ANON = "6f1f3c5e-2b8a-4d8e-9b0c-3f2f1d7a9e41"
USER = "cus_8Hq2LmZ4"


def payload(name: str) -> dict[str, Any]:
    return source_example("segment", name)


def events(kind: segment.CallKind, body: Any) -> list[StorefrontEvent]:
    result = segment.to_canonical(kind, body, store_id="demo", received_at=NOW)
    for event in result:
        assert decode_event(encode_event(event)) == event
    return result


def only(kind: segment.CallKind, body: Any) -> StorefrontEvent:
    [event] = events(kind, body)
    return event


def errors(kind: segment.CallKind, body: Any) -> list[tuple[str, str]]:
    with pytest.raises(segment.SegmentError) as info:
        segment.to_canonical(kind, body, store_id="demo", received_at=NOW)
    return info.value.errors


def fields(errs: list[tuple[str, str]]) -> list[str]:
    return [field for field, _ in errs]


def track(event: str, properties: Any, **extra: Any) -> dict[str, Any]:
    return {"messageId": "m1", "userId": USER, "event": event, "properties": properties, **extra}


# --- identify and alias -------------------------------------------------------------------------------------


def test_identify_becomes_customer_upserted_with_every_customer_field() -> None:
    upserted, linked = events("identify", payload("identify__signup"))
    assert isinstance(upserted, CustomerUpsertedEvent)
    assert upserted.event_id == "segment:ajs-next-1763719215482-4b7a9c1e-0f2d-4e8b-a1c3-5d6e7f8a9b0c"
    assert upserted.source is Source.SEGMENT
    assert upserted.store_id == "demo"
    assert upserted.occurred_at == datetime(2026, 11, 21, 10, 0, 15, 482000, tzinfo=UTC)
    assert upserted.received_at == NOW
    assert upserted.payload.created_at == datetime(2026, 11, 21, 10, 0, 13, tzinfo=UTC)
    customer = upserted.customer
    assert customer.store_customer_id == USER
    assert customer.anonymous_id == ANON
    assert customer.email == "ana.souza@example.com"  # trimmed and lower-cased by the canonical model
    assert (customer.first_name, customer.last_name) == ("Ana", "Souza")
    assert customer.phone == "+55 11 91234-5678"
    assert customer.locale == "pt-BR"
    assert customer.timezone == "America/Sao_Paulo"
    assert (customer.city, customer.country) == ("São Paulo", "Brazil")
    assert customer.birthday == date(1991, 3, 14)
    assert customer.accepts_marketing is True
    assert upserted.partition_key == f"demo:{USER}"
    assert isinstance(linked, IdentityLinkedEvent)


def test_identify_with_both_ids_links_the_anonymous_visitor() -> None:
    _, linked = events("identify", payload("identify__signup"))
    assert isinstance(linked, IdentityLinkedEvent)
    assert linked.event_id == "segment:ajs-next-1763719215482-4b7a9c1e-0f2d-4e8b-a1c3-5d6e7f8a9b0c:link"
    assert linked.payload.previous_id == ANON
    assert linked.payload.previous_kind == "anonymous_id"
    assert (linked.customer.store_customer_id, linked.customer.anonymous_id) == (USER, ANON)
    assert linked.partition_key == f"demo:{USER}"


@pytest.mark.parametrize("missing", ["userId", "anonymousId"])
def test_identify_with_one_id_links_nothing(missing: str) -> None:
    body = payload("identify__signup")
    del body[missing]
    assert [type(e) for e in events("identify", body)] == [CustomerUpsertedEvent]


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"first_name": "Ana", "last_name": "Souza"}, ("Ana", "Souza")),
        ({"name": "João Pedro Lima"}, ("João", "Pedro Lima")),
        ({"name": "Cher"}, ("Cher", None)),
        ({"name": "Ana Souza", "firstName": "Aninha"}, ("Aninha", None)),
    ],
)
def test_names_come_from_either_spelling_or_the_full_name(
    traits: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    event = only("identify", {"messageId": "m", "userId": "u", "traits": traits})
    assert (event.customer.first_name, event.customer.last_name) == expected


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"accepts_marketing": False}, False),
        ({"acceptsMarketing": True}, True),
        ({"email_opt_in": "false"}, False),
        ({"email": "a@example.com"}, None),
    ],
)
def test_marketing_consent_is_read_only_when_given(traits: dict[str, Any], expected: bool | None) -> None:
    event = only("identify", {"messageId": "m", "userId": "u", "traits": traits})
    assert event.customer.accepts_marketing is expected


def test_identify_falls_back_to_context_traits_and_cuts_a_birthday_datetime() -> None:
    body = {
        "messageId": "m",
        "userId": "u",
        "traits": {"birthday": "1991-03-14T00:00:00-03:00"},
        "context": {"traits": {"email": "Ctx@Example.com", "phone": "555", "birthday": "1980-01-01"}},
    }
    customer = only("identify", body).customer
    assert customer.email == "ctx@example.com"
    assert customer.phone == "555"
    assert customer.birthday == date(1991, 3, 14)  # the call's own traits win over the context's


def test_alias_links_previous_id_to_user() -> None:
    event = only("alias", payload("alias__after_signup"))
    assert isinstance(event, IdentityLinkedEvent)
    assert event.event_id == "segment:ajs-next-1763719215301-3c4d5e6f-7a8b-4c9d-0e1f-2a3b4c5d6e7f"
    assert event.customer.store_customer_id == USER
    assert event.payload.previous_id == ANON
    assert event.payload.previous_kind == "anonymous_id"
    assert event.partition_key == f"demo:{USER}"


def test_alias_needs_user_id_and_previous_id() -> None:
    assert fields(errors("alias", {"messageId": "m", "anonymousId": "a", "previousId": "p"})) == ["userId"]
    assert fields(errors("alias", {"messageId": "m", "userId": "u"})) == ["previousId"]


# --- ecommerce track calls ----------------------------------------------------------------------------------


def test_order_completed_becomes_order_placed() -> None:
    event = only("track", payload("track__order_completed"))
    assert isinstance(event, OrderPlacedEvent)
    assert event.event_id == "segment:ajs-next-1763723842117-9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    assert event.customer.store_customer_id == USER
    assert event.customer.email == "ana.souza@example.com"  # from context.traits
    assert event.occurred_at == datetime(2026, 11, 21, 11, 17, 22, 117000, tzinfo=UTC)
    order = event.payload
    assert order.order_id == "ord_100234"
    assert order.total == Decimal("67.80")
    assert order.currency == "BRL"
    assert order.cart_id == "chk_5f1e2d3c"
    assert order.discount_codes == ("WELCOME10",)
    first, second = order.line_items
    assert (first.product_id, first.sku, first.title, first.category) == (
        "prod_7731",
        "TEA-SENCHA-100",
        "Sencha Green Tea 100 g",
        "Tea",
    )
    assert (first.quantity, first.price) == (2, Decimal("18.90"))
    assert (second.product_id, second.quantity, second.price) == ("prod_1204", 1, Decimal("24.50"))


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ({"total": "10.5", "revenue": 9}, Decimal("10.50")),
        ({"revenue": 9}, Decimal("9.00")),
        ({}, Decimal("37.80")),  # 18.90 x 2 from the products
        ({"total": 0}, Decimal("0.00")),
    ],
)
def test_order_total_falls_back_to_revenue_then_products(amounts: dict[str, Any], expected: Decimal) -> None:
    properties = {
        "order_id": "o1",
        "products": [{"product_id": "p", "price": 18.9, "quantity": "2"}],
        **amounts,
    }
    event = only("track", track("Order Completed", properties))
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.total == expected


def test_order_defaults_and_fallbacks() -> None:
    properties = {
        "checkout_id": "chk1",
        "currency": "eur",
        "products": [{"sku": "SKU-1", "price": 19.990000000000002}],
    }
    event = only("track", track("Order Completed", properties))
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.order_id == "chk1"
    assert event.payload.cart_id == "chk1"
    assert event.payload.currency == "EUR"
    [item] = event.payload.line_items
    assert (item.product_id, item.sku, item.quantity, item.price) == ("SKU-1", "SKU-1", 1, Decimal("19.99"))


def test_currency_defaults_to_usd() -> None:
    event = only("track", track("Order Completed", {"order_id": 42}))
    assert isinstance(event, OrderPlacedEvent)
    assert (event.payload.order_id, event.payload.currency, event.payload.total) == (
        "42",
        "USD",
        Decimal("0"),
    )


def test_checkout_started_is_a_cart_snapshot_with_recovery_url() -> None:
    event = only("track", payload("track__checkout_started_rudderstack"))
    assert isinstance(event, CartUpdatedEvent)
    cart = event.payload
    assert cart.action == "snapshot"
    assert cart.cart_id == "chk_5f1e2d3c"
    assert cart.total == Decimal("55.80")  # value
    assert cart.currency == "BRL"
    assert cart.recovery_url == "https://shop.example.com/checkout/chk_5f1e2d3c"
    assert [i.product_id for i in cart.line_items] == ["prod_7731", "prod_1204"]
    assert event.customer.email == "ana.souza@example.com"
    assert event.customer.first_name == "Ana"


def test_cart_viewed_without_ids_is_the_visitors_cart() -> None:
    body = {
        "messageId": "m",
        "anonymousId": ANON,
        "event": "Cart Viewed",
        "properties": {
            "products": [{"product_id": "p1", "price": "3.5", "quantity": 2}],
            "url": "https://s/cart",
        },
    }
    event = only("track", body)
    assert isinstance(event, CartUpdatedEvent)
    assert event.payload.cart_id == f"anon:{ANON}"
    assert event.payload.total == Decimal("7.00")
    assert event.payload.currency == "USD"
    assert event.payload.recovery_url == "https://s/cart"
    assert event.partition_key == f"demo:anon:{ANON}"


def test_checkout_started_cart_id_falls_back_to_order_id() -> None:
    event = only("track", track("Checkout Started", {"order_id": "o9", "revenue": 5, "total": 7}))
    assert isinstance(event, CartUpdatedEvent)
    assert (event.payload.cart_id, event.payload.total, event.payload.recovery_url) == (
        "o9",
        Decimal("5.00"),
        None,
    )


def test_product_added_is_a_cart_delta_with_the_one_product() -> None:
    event = only("track", payload("track__product_added"))
    assert isinstance(event, CartUpdatedEvent)
    cart = event.payload
    assert cart.action == "added"
    assert cart.cart_id == "cart_a81f77"
    [item] = cart.line_items
    assert (item.product_id, item.sku, item.title, item.category, item.quantity, item.price) == (
        "prod_7731",
        "TEA-SENCHA-100",
        "Sencha Green Tea 100 g",
        "Tea",
        2,
        Decimal("18.90"),
    )
    assert cart.total == Decimal("37.80")
    assert event.customer.store_customer_id is None
    assert event.customer.anonymous_id == ANON


def test_product_removed_is_a_removal() -> None:
    event = only("track", track("Product Removed", {"product_id": "p1", "price": 2}))
    assert isinstance(event, CartUpdatedEvent)
    assert (event.payload.action, event.payload.cart_id) == ("removed", f"anon:{USER}")


def test_product_viewed_becomes_product_viewed() -> None:
    event = only("track", payload("track__product_viewed"))
    assert isinstance(event, ProductViewedEvent)
    product = event.payload.product
    assert (product.product_id, product.sku, product.title, product.category, product.price) == (
        "prod_7731",
        "TEA-SENCHA-100",
        "Sencha Green Tea 100 g",
        "Tea",
        Decimal("18.90"),
    )
    assert event.customer.anonymous_id == ANON


def test_a_product_needs_an_id_or_sku() -> None:
    assert fields(errors("track", track("Product Viewed", {"name": "Mug"}))) == ["properties.product_id"]
    body = track("Order Completed", {"order_id": "o", "products": [{"sku": "a"}, {"name": "Mug"}]})
    assert fields(errors("track", body)) == ["properties.products[1].product_id"]


def test_order_refunded_and_cancelled() -> None:
    refunded = only("track", payload("track__order_refunded"))
    assert isinstance(refunded, OrderRefundedEvent)
    assert (refunded.payload.order_id, refunded.payload.amount, refunded.payload.currency) == (
        "ord_100234",
        Decimal("24.50"),
        "BRL",
    )
    assert refunded.payload.cancelled is False
    body = track(
        "Order Cancelled", {"order_id": "o1", "products": [{"product_id": "p", "price": 4, "quantity": 3}]}
    )
    cancelled = only("track", body)
    assert isinstance(cancelled, OrderRefundedEvent)
    assert (cancelled.payload.amount, cancelled.payload.cancelled) == (Decimal("12.00"), True)
    assert fields(errors("track", track("Order Refunded", {"total": 1}))) == ["properties.order_id"]


def test_an_order_refunded_naming_only_its_order_is_a_refund_in_full() -> None:
    # Segment's documented full refund: "For full refunds, fire this event whenever an order/transaction
    # gets refunded: analytics.track('Order Refunded', {order_id: ...})" (its Google Analytics destination).
    full = only("track", track("Order Refunded", {"order_id": "o1"}))
    assert isinstance(full, OrderRefundedEvent)
    assert (full.payload.order_id, full.payload.amount, full.payload.in_full) == ("o1", Decimal("0"), True)
    assert full.payload.cancelled is False
    assert b'"in_full":true' in encode_event(full)
    # An amount said, or products to add up, or a cancellation: as before, no `in_full` written.
    for name, properties in [
        ("Order Refunded", {"order_id": "o1", "total": 5}),
        ("Order Refunded", {"order_id": "o1", "products": [{"product_id": "p", "price": 4, "quantity": 1}]}),
        ("Order Cancelled", {"order_id": "o1"}),
    ]:
        event = only("track", track(name, properties))
        assert isinstance(event, OrderRefundedEvent)
        assert event.payload.in_full is None
        assert b"in_full" not in encode_event(event)


# --- survey -------------------------------------------------------------------------------------------------


def test_survey_answered_carries_the_three_part_survey() -> None:
    event = only("track", payload("track__survey_answered"))
    assert isinstance(event, SurveyAnsweredEvent)
    survey = event.payload
    assert survey.survey_id == "loyalty-3part"
    assert len(survey.answers) == 10
    assert [a.scale for a in survey.answers].count(SurveyScale.AFFECTIVE) == 5
    assert [a.scale for a in survey.answers].count(SurveyScale.CONATIVE) == 2
    assert [a.scale for a in survey.answers].count(SurveyScale.ACTION) == 3
    first, _, third = survey.answers[:3]
    assert (first.statement_id, first.agree, first.score) == ("affective.really_like", True, None)
    assert (third.statement_id, third.agree, third.score) == ("affective.like_more", None, 4)
    assert (survey.csat, survey.ces, survey.nps) == (5, 2, 9)


def test_survey_scale_is_case_insensitive() -> None:
    body = track(
        "Survey Answered",
        {"survey_id": "s", "answers": [{"statement_id": "x", "scale": "Action", "agree": 1}]},
    )
    event = only("track", body)
    assert isinstance(event, SurveyAnsweredEvent)
    assert event.payload.answers[0].scale is SurveyScale.ACTION


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["answers"][1].update(score=6), "properties.answers[1].score"),
        (lambda p: p["answers"][1].update(score="four"), "properties.answers[1].score"),
        (lambda p: p["answers"][0].update(scale="loyal"), "properties.answers[0].scale"),
        (lambda p: p["answers"][0].pop("agree"), "properties.answers[0]"),
        (lambda p: p["answers"][2].pop("statement_id"), "properties.answers[2].statement_id"),
        (lambda p: p.update(csat=6), "properties.csat"),
        (lambda p: p.update(ces=0), "properties.ces"),
        (lambda p: p.update(nps=11), "properties.nps"),
        (lambda p: p.update(nps=7.5), "properties.nps"),
        (lambda p: p.pop("survey_id"), "properties.survey_id"),
        (lambda p: p.update(answers={"a": 1}), "properties.answers"),
    ],
)
def test_invalid_survey_answers_name_the_field(change: Any, field: str) -> None:
    body = payload("track__survey_answered")
    change(body["properties"])
    assert fields(errors("track", body)) == [field]


def test_survey_answer_without_agree_or_score_says_so() -> None:
    body = track("Survey Answered", {"survey_id": "s", "answers": [{"statement_id": "x"}]})
    [(field, message)] = errors("track", body)
    assert field == "properties.answers[0]"
    assert "agree" in message
    assert "score" in message


# --- custom events and pages --------------------------------------------------------------------------------


def test_other_track_events_are_custom() -> None:
    body = track("Coupon Applied", {"coupon_id": "WELCOME10", "discount": 6.5, "email": "X@Example.com"})
    event = only("track", body)
    assert isinstance(event, CustomEvent)
    assert event.payload.name == "Coupon Applied"
    assert event.payload.properties == {"coupon_id": "WELCOME10", "discount": 6.5, "email": "X@Example.com"}
    assert event.customer.email == "x@example.com"


def test_event_names_are_case_sensitive_as_in_the_spec() -> None:
    assert isinstance(only("track", track("order completed", {"order_id": "o"})), CustomEvent)


def test_track_without_properties_is_fine() -> None:
    event = only("track", {"messageId": "m", "anonymousId": "a", "event": "Signed Up"})
    assert isinstance(event, CustomEvent)
    assert event.payload.properties == {}


def test_page_becomes_a_custom_page_viewed() -> None:
    event = only("page", payload("page__product"))
    assert isinstance(event, CustomEvent)
    assert event.payload.name == "Page Viewed: Product"
    assert event.payload.properties["url"] == "https://shop.example.com/products/sencha?utm_source=google"
    assert event.customer.anonymous_id == ANON


def test_unnamed_page_takes_its_url_from_context() -> None:
    body = {"messageId": "m", "anonymousId": "a", "context": {"page": {"url": "https://s/", "title": "Home"}}}
    event = only("page", body)
    assert isinstance(event, CustomEvent)
    assert event.payload.name == "Page Viewed"
    assert event.payload.properties == {"url": "https://s/", "title": "Home"}


# --- time ---------------------------------------------------------------------------------------------------


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The device clock is 2 hours slow: it sent 5 seconds after the call, by its own clock.
    body = track("Signed Up", {}, originalTimestamp="2026-11-21T12:59:50Z", sentAt="2026-11-21T12:59:55Z")
    assert only("track", body).occurred_at == NOW - timedelta(seconds=5)


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        (
            {
                "timestamp": "2026-11-21T14:00:00Z",
                "originalTimestamp": "2026-11-21T10:00:00Z",
                "sentAt": "2026-11-21T10:00:01Z",
            },
            datetime(2026, 11, 21, 14, tzinfo=UTC),
        ),
        ({"originalTimestamp": "2026-11-21T10:00:00+01:00"}, datetime(2026, 11, 21, 9, tzinfo=UTC)),
        ({"timestamp": "2026-11-21T14:00:00"}, datetime(2026, 11, 21, 14, tzinfo=UTC)),  # naive is UTC
        ({}, NOW),
    ],
)
def test_timestamp_wins_then_original_timestamp_then_receipt(
    times: dict[str, str], expected: datetime
) -> None:
    assert only("track", track("Signed Up", {}, **times)).occurred_at == expected


def test_batch_sent_at_corrects_calls_without_their_own() -> None:
    call = track("Signed Up", {}, type="track", originalTimestamp="2026-11-21T08:00:00Z")
    body = {"batch": [call], "sentAt": "2026-11-21T08:00:30Z"}
    [event] = segment.batch_to_canonical(body, store_id="demo", received_at=NOW)
    assert event.occurred_at == NOW - timedelta(seconds=30)


def test_timestamp_more_than_a_day_ahead_is_rejected() -> None:
    ahead = (NOW + timedelta(days=1, minutes=1)).isoformat()
    [(field, message)] = errors("track", track("Signed Up", {}, timestamp=ahead))
    assert field == "timestamp"
    assert "future" in message
    assert fields(errors("track", track("Signed Up", {}, originalTimestamp=ahead))) == ["originalTimestamp"]
    almost = (NOW + timedelta(hours=23)).isoformat()
    assert only("track", track("Signed Up", {}, timestamp=almost)).occurred_at == NOW + timedelta(hours=23)


def test_skew_correction_that_lands_in_the_future_is_rejected() -> None:
    body = track("Signed Up", {}, originalTimestamp="2026-11-25T00:00:00Z", sentAt="2026-11-20T00:00:00Z")
    assert fields(errors("track", body)) == ["originalTimestamp"]


# --- invalid calls ------------------------------------------------------------------------------------------


def _event_ids(body: dict[str, Any], kind: segment.CallKind = "track") -> list[str]:
    return [event.event_id for event in events(kind, body)]


def _batch_ids(*calls: dict[str, Any], **envelope: Any) -> list[str]:
    body = {"batch": [{"type": "track", **call} for call in calls], **envelope}
    return [e.event_id for e in segment.batch_to_canonical(body, store_id="demo", received_at=NOW)]


@pytest.mark.parametrize("absent", ["missing", None])
def test_a_call_without_a_message_id_is_named_by_what_it_says(absent: str | None) -> None:
    # Segment's spec: messageId is implicit, "Automatically collected by Segment"; the HTTP API's examples
    # send none. The same call sent again (a retry) is the same event; any other call is another.
    body = payload("track__order_completed")
    named_id = _event_ids(body)
    if absent == "missing":
        del body["messageId"]
    else:
        body["messageId"] = absent
    [event_id] = _event_ids(body)
    assert event_id.startswith("segment:sha256:")
    assert [event_id] != named_id
    assert _event_ids(dict(reversed(body.items()))) == [event_id]
    resent = {**body, "sentAt": "2026-11-21T14:59:00Z", "writeKey": "demo-write-key"}
    assert _event_ids(resent) == [event_id]
    assert _event_ids({**body, "timestamp": "2026-11-21T10:00:01Z"}) != [event_id]
    assert _event_ids({**body, "userId": "someone else"}) != [event_id]
    assert len(event_id) <= 200


def test_a_batch_names_its_calls_without_message_ids_by_their_places_too() -> None:
    call = {"userId": USER, "event": "Product Viewed", "properties": {"product_id": "p1"}}
    first, second = _batch_ids(call, call)
    assert first != second  # two views in one batch are two, even alike
    assert _batch_ids(call, call, sentAt="2026-11-21T14:59:00Z") == [first, second]  # a retried batch
    assert _batch_ids(call, call, context={"library": {"name": "curl"}}) == [first, second]
    assert _batch_ids({**call, "messageId": "m1"}, call) == ["segment:m1", second]
    [alone] = _event_ids(call)
    assert alone not in (first, second)


def _nested(depth: int) -> dict[str, Any]:
    """Properties `depth` levels deep (the properties object is level 1)."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"x": value}


@pytest.mark.parametrize("kind", ["track", "page"])
def test_kept_properties_nest_at_most_32_levels(kind: segment.CallKind) -> None:
    # A custom event keeps its properties as they came, and the events' reader (pydantic's parser) stops
    # at 200 levels: what ingest accepts, the segmenter must be able to read.
    properties = _nested(32)
    assert r.nests_deeper_than(properties, 31)
    assert not r.nests_deeper_than(properties, 32)
    body: dict[str, Any] = {"messageId": "m", "userId": USER, "event": "Deep", "properties": properties}
    [event] = events(kind, body)
    assert isinstance(event, CustomEvent)
    assert event.payload.properties["x"] == properties["x"]
    body["properties"] = _nested(33)
    assert errors(kind, body) == [("properties", "nests deeper than 32 levels")]
    batch = {"batch": [{"type": kind, **body}]}
    with pytest.raises(segment.SegmentError) as caught:
        segment.batch_to_records(batch, store_id="demo", received_at=NOW)
    assert fields(caught.value.errors) == ["batch[0].properties"]
    # Only what is kept: the properties of a known event are read, not kept, and nest as they like.
    deep_order = {**payload("track__order_completed")}
    deep_order["properties"] = {**deep_order["properties"], "extra": _nested(60)["x"]}
    assert [e.type for e in events("track", deep_order)] == ["order_placed"]


def test_a_message_id_given_must_be_a_usable_one() -> None:
    body = payload("track__order_completed")
    for bad in ("   ", "", "x" * 200, ["m1"], {"id": "m1"}):
        body["messageId"] = bad
        assert fields(errors("track", body)) == ["messageId"]


@pytest.mark.parametrize("blank", [None, "", "  "])
def test_user_id_or_anonymous_id_is_required(blank: str | None) -> None:
    body = {"messageId": "m", "event": "Signed Up", "userId": blank, "anonymousId": blank}
    [(field, message)] = errors("track", body)
    assert field == "userId"
    assert "anonymousId" in message


def test_numbers_may_arrive_as_strings_and_ids_as_numbers() -> None:
    properties = {
        "order_id": 1001,
        "total": "12.5",
        "products": [{"product_id": 7, "price": "12.5", "quantity": "1"}],
    }
    event = only(
        "track", {"messageId": 99, "userId": 123456, "event": "Order Completed", "properties": properties}
    )
    assert isinstance(event, OrderPlacedEvent)
    assert (event.event_id, event.customer.store_customer_id, event.payload.order_id) == (
        "segment:99",
        "123456",
        "1001",
    )
    assert event.payload.line_items[0].product_id == "7"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (track("Order Completed", {"order_id": "o", "total": "lots"}), "properties.total"),
        (track("Order Completed", {"order_id": "o", "total": -1}), "properties.total"),
        (track("Order Completed", {"order_id": "o", "total": "1e20"}), "properties.total"),
        (track("Order Completed", {"order_id": "o", "currency": "dollars"}), "properties.currency"),
        (
            track(
                "Order Completed",
                {"order_id": "o", "products": [{"product_id": "p"}, {"product_id": "q", "quantity": 0}]},
            ),
            "properties.products[1].quantity",
        ),
        (track("Order Completed", {"order_id": "o", "products": {"product_id": "p"}}), "properties.products"),
        (track("Order Completed", {"order_id": {"id": 1}}), "properties.order_id"),
        (track("Product Added", {"product_id": "p", "price": "free"}), "properties.price"),
        (track("Signed Up", ["not", "an", "object"]), "properties"),
        (track("Signed Up", {}, timestamp="yesterday"), "timestamp"),
        (track("", {}), "event"),
        ({"messageId": "m", "userId": "u", "traits": {"email": ["a@b.c"]}}, "traits.email"),
        (
            {"messageId": "m", "userId": "u", "context": {"traits": {"address": "Lisbon"}}},
            "context.traits.address",
        ),
        ({"messageId": "m", "userId": "u", "context": {"locale": "x" * 36}}, "context.locale"),
        ({"messageId": "m", "userId": True}, "userId"),
        ({"messageId": "m" * 200, "userId": "u"}, "messageId"),
    ],
)
def test_invalid_values_name_their_field(body: dict[str, Any], field: str) -> None:
    kind: segment.CallKind = "track" if "event" in body else "identify"
    assert field in fields(errors(kind, body))


def test_products_adding_up_past_the_largest_amount_are_rejected() -> None:
    products = [{"product_id": "p", "price": "999999999999", "quantity": 1000}]
    assert fields(errors("track", track("Order Completed", {"order_id": "o", "products": products}))) == [
        "properties.products"
    ]


@pytest.mark.parametrize("body", [None, [], "track", 42, [{"messageId": "m"}]])
def test_a_body_that_is_not_an_object_is_rejected_as_a_whole(body: Any) -> None:
    assert errors("track", body) == [("body", "should be a JSON object")]


# --- batch --------------------------------------------------------------------------------------------------


def test_batch_maps_every_call_and_ignores_groups() -> None:
    result = segment.batch_to_canonical(payload("batch__server_session"), store_id="demo", received_at=NOW)
    assert [e.type for e in result] == [
        "customer_upserted",
        "identity_linked",
        "custom",  # page
        "cart_updated",  # Cart Viewed
        "cart_updated",  # Product Removed
        "order_placed",
        "custom",  # Wishlist Product Added to Cart
        "custom",  # screen
    ]
    page, screen = result[2], result[7]
    assert isinstance(page, CustomEvent)
    assert isinstance(screen, CustomEvent)
    assert (page.payload.name, screen.payload.name) == ("Page Viewed: Cart", "Page Viewed: Order History")
    order = result[5]
    assert isinstance(order, OrderPlacedEvent)
    assert (order.payload.total, order.payload.currency) == (Decimal("25.00"), "EUR")
    assert len({e.event_id for e in result}) == len(result)


def test_batch_context_is_merged_into_each_call() -> None:
    body = {
        "batch": [
            {"type": "track", "messageId": "a", "userId": "u", "event": "X", "context": {"locale": "pt-PT"}},
            {"type": "track", "messageId": "b", "userId": "u", "event": "X"},
        ],
        "context": {"locale": "en-US", "timezone": "Europe/Lisbon"},
    }
    first, second = segment.batch_to_canonical(body, store_id="demo", received_at=NOW)
    assert (first.customer.locale, first.customer.timezone) == ("pt-PT", "Europe/Lisbon")
    assert second.customer.locale == "en-US"


def test_batch_with_two_bad_calls_lists_both_and_accepts_none() -> None:
    body = payload("batch__server_session")
    body["batch"][1]["messageId"] = "  "
    body["batch"][5]["properties"]["products"][0]["price"] = "twelve"
    with pytest.raises(segment.SegmentError) as info:
        segment.batch_to_canonical(body, store_id="demo", received_at=NOW)
    assert fields(info.value.errors) == ["batch[1].messageId", "batch[5].properties.products[0].price"]
    assert "batch[1].messageId" in str(info.value)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"messageId": "m", "userId": "u"}, "batch[0].type"),
        ({"type": "Track", "messageId": "m", "userId": "u"}, "batch[0].type"),
        ("track", "batch[0]"),
        ({"type": "track", "messageId": "m", "event": "X"}, "batch[0].userId"),
    ],
)
def test_bad_batch_items_are_named_by_index(item: Any, field: str) -> None:
    with pytest.raises(segment.SegmentError) as info:
        segment.batch_to_canonical({"batch": [item]}, store_id="demo", received_at=NOW)
    assert fields(info.value.errors) == [field]


def test_batch_over_the_limit_is_rejected_whole() -> None:
    call = {"type": "track", "messageId": "m", "userId": "u", "event": "X"}
    with pytest.raises(segment.SegmentError) as info:
        segment.batch_to_canonical({"batch": [call] * 4}, store_id="demo", received_at=NOW, max_events=3)
    [(field, message)] = info.value.errors
    assert field == "batch"
    assert "limit" in message
    assert "3" in message
    assert (
        len(segment.batch_to_canonical({"batch": [call] * 3}, store_id="d", received_at=NOW, max_events=3))
        == 3
    )


@pytest.mark.parametrize(("body", "field"), [({}, "batch"), ({"batch": {"a": 1}}, "batch"), ([], "body")])
def test_batch_envelope_must_hold_a_list(body: Any, field: str) -> None:
    with pytest.raises(segment.SegmentError) as info:
        segment.batch_to_canonical(body, store_id="demo", received_at=NOW)
    assert fields(info.value.errors) == [field]


def test_empty_batch_is_nothing() -> None:
    assert segment.batch_to_canonical({"batch": []}, store_id="demo", received_at=NOW) == []


# --- write key, examples, documentation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"writeKey": "demo-write-key", "batch": []}, "demo-write-key"),
        ({"writeKey": " demo-write-key "}, "demo-write-key"),
        ({"writeKey": ""}, None),
        ({"writeKey": 123}, None),
        ({}, None),
        (["writeKey"], None),
        (None, None),
    ],
)
def test_write_key_from_body(body: Any, expected: str | None) -> None:
    assert segment.write_key_from_body(body) == expected


CALL_MODELS: dict[str, type[BaseModel]] = {
    "identify": segment.IdentifyCall,
    "track": segment.TrackCall,
    "page": segment.PageCall,
    "alias": segment.AliasCall,
    "batch": segment.BatchRequest,
}


@pytest.mark.parametrize(("kind", "path"), source_examples("segment"), ids=lambda v: getattr(v, "name", v))
def test_every_shared_example_maps_and_matches_the_documented_model(kind: str, path: Any) -> None:
    body = json.loads(path.read_text())
    if kind == "batch":
        result = segment.batch_to_canonical(body, store_id="demo", received_at=NOW)
    else:
        assert kind in ("identify", "track", "page", "alias")
        result = segment.to_canonical(kind, body, store_id="demo", received_at=NOW)  # type: ignore[arg-type]
    assert result
    for event in result:
        assert decode_event(encode_event(event)) == event
        assert event.source is Source.SEGMENT
    CALL_MODELS[kind].model_validate(body)
    # Server examples carry the secret key; mobile apps, like pages, carry the public browser key.
    assert segment.write_key_from_body(body) in ("demo-write-key", "demo-browser-key", None)


def test_the_openapi_schemas_document_the_survey() -> None:
    track_schema = json.dumps(segment.TrackCall.model_json_schema())
    for word in ("Survey Answered", "statement_id", "affective", "conative", "csat", "ces", "nps"):
        assert word in track_schema
    survey_schema = segment.SurveyAnsweredProperties.model_json_schema()
    assert {"survey_id", "answers", "csat", "ces", "nps"} <= set(survey_schema["properties"])
    batch_schema = segment.BatchRequest.model_json_schema()
    assert "discriminator" in json.dumps(batch_schema["properties"]["batch"])


def test_segment_error_is_a_value_error_with_fields() -> None:
    error = segment.SegmentError([("userId", "is required"), ("batch[2].properties.total", "bad")])
    assert isinstance(error, ValueError)
    assert str(error) == "userId: is required; batch[2].properties.total: bad"


# --- anything at all in, events or SegmentError out ---------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
EVENTS = [
    "Order Completed",
    "Checkout Started",
    "Cart Viewed",
    "Product Added",
    "Product Removed",
    "Product Viewed",
    "Order Refunded",
    "Order Cancelled",
    "Survey Answered",
    "Signed Up",
]
ID = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=6)
TIMES = st.datetimes(timezones=st.none() | st.just(UTC)).map(datetime.isoformat) | JSON
NUMBERS = st.integers(-5, 20) | st.decimals(-5, 1e13, places=3).map(str) | st.floats() | JSON
PRODUCT = st.fixed_dictionaries(
    {},
    optional={
        "product_id": ID | JSON,
        "sku": st.text(max_size=4),
        "price": NUMBERS,
        "quantity": NUMBERS,
    },
)
ANSWER = st.fixed_dictionaries(
    {},
    optional={
        "statement_id": ID | JSON,
        "scale": st.sampled_from(["affective", "Action", "nope"]) | JSON,
        "agree": st.booleans() | JSON,
        "score": NUMBERS,
    },
)
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "order_id": ID | JSON,
        "checkout_id": st.text(max_size=4),
        "total": NUMBERS,
        "revenue": NUMBERS,
        "value": NUMBERS,
        "currency": st.sampled_from(["usd", "EUR", "€", ""]) | JSON,
        "products": st.lists(PRODUCT, max_size=3) | JSON,
        "product_id": ID,
        "price": NUMBERS,
        "quantity": NUMBERS,
        "survey_id": ID | JSON,
        "answers": st.lists(ANSWER, max_size=3) | JSON,
        "csat": NUMBERS,
        "ces": NUMBERS,
        "nps": NUMBERS,
        "email": st.text(max_size=6) | JSON,
        "url": st.text(max_size=6),
    },
)
TRAITS = st.fixed_dictionaries(
    {},
    optional={
        "email": st.emails() | JSON,
        "name": st.text(max_size=8) | JSON,
        "firstName": JSON,
        "birthday": TIMES,
        "address": st.fixed_dictionaries({}, optional={"city": JSON, "country": JSON}) | JSON,
        "createdAt": TIMES,
        "accepts_marketing": JSON,
    },
)
CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "locale": JSON,
        "timezone": JSON,
        "traits": TRAITS | JSON,
        "page": st.fixed_dictionaries({}, optional={"url": JSON}) | JSON,
    },
)
# Wild: anything in any field, mostly caught by the envelope's own checks.
WILD_CALL = st.fixed_dictionaries(
    {"messageId": st.text(max_size=6) | JSON},
    optional={
        "type": st.sampled_from(segment.BATCH_KINDS) | JSON,
        "userId": st.text(max_size=6) | JSON,
        "anonymousId": st.text(max_size=6) | JSON,
        "previousId": st.text(max_size=6) | JSON,
        "event": st.sampled_from(EVENTS) | JSON,
        "name": st.text(max_size=6) | JSON,
        "timestamp": TIMES,
        "originalTimestamp": TIMES,
        "sentAt": TIMES,
        "properties": PROPERTIES | JSON,
        "traits": TRAITS | JSON,
        "context": CONTEXT | JSON,
    },
)
# Shaped: a valid envelope, so that the wild part reaches each event's own mapping.
SHAPED_CALL = st.fixed_dictionaries(
    {
        "messageId": ID,
        "userId": ID,
        "previousId": ID,
        "type": st.sampled_from(segment.BATCH_KINDS),
        "event": st.sampled_from(EVENTS),
    },
    optional={
        "anonymousId": ID | JSON,
        "name": st.text(max_size=6),
        "originalTimestamp": st.datetimes().map(datetime.isoformat),
        "sentAt": st.datetimes().map(datetime.isoformat),
        "properties": PROPERTIES,
        "traits": TRAITS,
        "context": CONTEXT,
    },
)
CALL = SHAPED_CALL | WILD_CALL
BATCH = st.fixed_dictionaries(
    {"batch": st.lists(CALL, max_size=4) | JSON},
    optional={"context": CONTEXT | JSON, "sentAt": TIMES, "writeKey": JSON},
)


def _events_or_segment_error(call: Any) -> None:
    try:
        result = call()
    except segment.SegmentError as exc:
        errs = exc.errors
    else:
        errs = []
        assert isinstance(result, list)
        for event in result:
            assert decode_event(encode_event(event)) is not None
    assert all(isinstance(f, str) and f and isinstance(m, str) and m for f, m in errs)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["identify", "track", "page", "alias"]), body=CALL | JSON)
def test_any_call_gives_events_or_a_segment_error(kind: segment.CallKind, body: Any) -> None:
    _events_or_segment_error(lambda: segment.to_canonical(kind, body, store_id="demo", received_at=NOW))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BATCH | JSON)
def test_any_batch_gives_events_or_a_segment_error(body: Any) -> None:
    _events_or_segment_error(
        lambda: segment.batch_to_canonical(body, store_id="demo", received_at=NOW, max_events=3)
    )
    assert segment.write_key_from_body(body) is None or isinstance(segment.write_key_from_body(body), str)


AMOUNT = st.decimals(0, 10**6, places=2).map(str) | st.floats(0, 1e6) | st.integers(0, 10**6)
VALID_PRODUCT = st.fixed_dictionaries(
    {"product_id": ID},
    optional={
        "sku": ID,
        # Any text but NUL, which the contract refuses (PostgreSQL text cannot hold it).
        # A lone surrogate is not text either (JSON can carry one as an escape; ingest refuses it with a 422).
        "name": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
        "price": AMOUNT,
        "quantity": st.integers(1, 1000) | st.integers(1, 1000).map(str),
    },
)
VALID_ORDER = st.fixed_dictionaries(
    {"order_id": ID},
    optional={
        "total": AMOUNT,
        "revenue": AMOUNT,
        "value": AMOUNT,
        "currency": st.sampled_from(["usd", "EUR", " brl "]),
        "coupon": ID,
        "products": st.lists(VALID_PRODUCT, max_size=5),
    },
)
VALID_SURVEY = st.fixed_dictionaries(
    {
        "survey_id": ID,
        "answers": st.lists(
            st.fixed_dictionaries(
                {"statement_id": ID, "scale": st.sampled_from([s.value for s in SurveyScale])},
                optional={"agree": st.booleans()},
            ).flatmap(
                lambda a: st.just(a) if "agree" in a else st.integers(1, 5).map(lambda n: {**a, "score": n})
            ),
            max_size=12,
        ),
    },
    optional={"csat": st.integers(1, 5), "ces": st.integers(1, 7), "nps": st.integers(0, 10)},
)


@settings(max_examples=200, deadline=None)
@given(
    event=st.sampled_from(
        ["Order Completed", "Checkout Started", "Cart Viewed", "Order Refunded", "Order Cancelled"]
    ),
    properties=VALID_ORDER,
)
def test_valid_order_and_cart_calls_always_map(event: str, properties: dict[str, Any]) -> None:
    [mapped] = events("track", track(event, properties))
    assert mapped.type in ("order_placed", "cart_updated", "order_refunded")


@settings(max_examples=200, deadline=None)
@given(
    event=st.sampled_from(["Product Added", "Product Removed", "Product Viewed"]), properties=VALID_PRODUCT
)
def test_valid_product_calls_always_map(event: str, properties: dict[str, Any]) -> None:
    [mapped] = events("track", track(event, properties))
    assert mapped.type in ("cart_updated", "product_viewed")


@settings(max_examples=200, deadline=None)
@given(properties=VALID_SURVEY)
def test_valid_surveys_always_map(properties: dict[str, Any]) -> None:
    mapped = only("track", track("Survey Answered", properties))
    assert isinstance(mapped, SurveyAnsweredEvent)
    assert len(mapped.payload.answers) == len(properties["answers"])

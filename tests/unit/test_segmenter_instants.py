"""Datetimes on shared tzinfo objects (services/segmenter/domain/instants.py): the same instants, the same
text and JSON, only cheaper to compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from pydantic import TypeAdapter

from services.segmenter.domain.instants import decidable, standard, standardise_event
from shared.storefront_event_structs import OrderPlacedEvent, StorefrontEvent
from tests.builders import segmenter_event

_PLAIN: TypeAdapter[datetime] = TypeAdapter(datetime)


def test_a_parsed_utc_datetime_holds_the_standard_utc_and_keeps_its_json() -> None:
    for text in ('"2026-01-05T10:00:00Z"', '"2026-01-05T10:00:00.120+00:00"'):
        plain = _PLAIN.validate_json(text)
        assert plain.tzinfo is not UTC  # pydantic's own TzInfo: what the standard form replaces
        held = standard(plain)
        assert held.tzinfo is UTC
        assert held == plain
        assert held.isoformat() == plain.isoformat()
        assert _PLAIN.dump_json(held) == _PLAIN.dump_json(plain)


def test_other_offsets_share_one_tzinfo_per_offset_and_keep_their_offset() -> None:
    one = standard(_PLAIN.validate_json('"2026-01-05T10:00:00-05:00"'))
    other = standard(_PLAIN.validate_json('"2026-03-01T08:30:00-05:00"'))
    assert one.tzinfo is other.tzinfo
    assert one.utcoffset() == timedelta(hours=-5)
    assert _PLAIN.dump_json(one) == b'"2026-01-05T10:00:00-05:00"'
    assert one.isoformat() == "2026-01-05T10:00:00-05:00"


def test_the_range_edges_keep_their_fields_at_any_offset() -> None:
    # A zero offset goes through astimezone(UTC), another through replace: neither may overflow at the edges.
    for text in (
        '"0001-01-01T00:00:00Z"',
        '"9999-12-31T23:59:59.999999Z"',
        '"0001-01-01T00:00:00+05:00"',
        '"9999-12-31T23:59:59-05:00"',
    ):
        plain = _PLAIN.validate_json(text)
        held = standard(plain)
        assert held.replace(tzinfo=None) == plain.replace(tzinfo=None)
        assert held.utcoffset() == plain.utcoffset()
        assert held.fold == plain.fold == 0
        assert _PLAIN.dump_json(held) == _PLAIN.dump_json(plain)


def test_standard_leaves_an_already_standard_datetime_as_it_is() -> None:
    at = datetime(2026, 1, 5, tzinfo=UTC)
    assert standard(at) is at
    shared = standard(datetime(2026, 1, 5, tzinfo=timezone(timedelta(hours=2))))
    assert standard(shared) is shared


def test_the_first_plain_zone_met_for_an_offset_is_the_one_shared() -> None:
    # An offset no other test uses: the first datetime met with it decides the shared object.
    decoded = msgspec.json.decode(b'"2026-01-05T10:00:00+04:37"', type=datetime)
    assert type(decoded.tzinfo) is timezone
    assert standard(decoded) is decoded  # msgspec's own object for the offset, kept as it is
    again = msgspec.json.decode(b'"2026-02-01T00:00:00+04:37"', type=datetime)
    assert standard(again) is again  # msgspec keeps one object per offset
    other = datetime(2026, 1, 5, 10, tzinfo=timezone(timedelta(hours=4, minutes=37)))
    assert other.tzinfo is not decoded.tzinfo
    moved = standard(other)
    assert moved.tzinfo is decoded.tzinfo
    assert moved == other
    assert moved.isoformat() == other.isoformat() == "2026-01-05T10:00:00+04:37"


def test_a_named_zone_met_first_is_not_shared() -> None:
    # Its name would reach every datetime of the offset (`tzname()`, `%Z`): the plain offset is shared.
    named = datetime(2026, 1, 5, 10, tzinfo=timezone(timedelta(hours=6, minutes=11), "Somewhere"))
    held = standard(named)
    assert held.tzinfo is not named.tzinfo
    assert held.tzname() == "UTC+06:11"
    assert held == named
    plain = datetime(2026, 3, 1, tzinfo=timezone(timedelta(hours=6, minutes=11)))
    assert standard(plain).tzinfo is held.tzinfo


def test_a_standardised_event_is_the_same_event() -> None:
    event = segmenter_event(
        "s1",
        "customer_upserted",
        datetime(2026, 1, 5, 9, 30, tzinfo=timezone(timedelta(hours=1))),
        {
            "email": "ines@example.com",
            "updated_at": "2026-01-04T08:00:00Z",
            "consent_at": "2026-01-03T07:00:00Z",
        },
        {"created_at": "2025-12-01T00:00:00Z"},
    )
    before = msgspec.json.encode(event)
    assert standardise_event(event) is event
    assert event.occurred_at.tzinfo is standard(event.occurred_at).tzinfo
    assert event.occurred_at.utcoffset() == timedelta(hours=1)
    for at in (event.customer.updated_at, event.customer.consent_at):
        assert at is not None
        assert at.tzinfo is UTC
    assert msgspec.json.encode(event) == before


def test_an_orders_version_is_standardised_too() -> None:
    event = segmenter_event(
        "s1",
        "order_placed",
        datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
        {"email": "ines@example.com"},
        {"order_id": "o1", "total": "10.00", "currency": "EUR", "updated_at": "2026-01-05T11:00:00-05:00"},
    )
    before = msgspec.json.encode(event)
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.updated_at is not None
    zone = event.payload.updated_at.tzinfo
    standardise_event(event)
    assert event.payload.updated_at.tzinfo is standard(datetime(2026, 1, 1, tzinfo=zone)).tzinfo
    assert msgspec.json.encode(event) == before


def _event(at: datetime, **customer: str) -> StorefrontEvent:
    return segmenter_event("s1", "customer_upserted", at, {"email": "ines@example.com", **customer})


@pytest.mark.parametrize(
    ("at", "customer", "field"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), {}, "occurred_at is before 1970"),
        (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), {}, "occurred_at is before 1970"),
        (datetime(9999, 12, 31, tzinfo=UTC), {}, "occurred_at is after 9000"),
        (
            datetime(2026, 1, 5, tzinfo=UTC),
            {"updated_at": "9999-01-01T00:00:00Z"},
            "customer.updated_at is after",
        ),
        (
            datetime(2026, 1, 5, tzinfo=UTC),
            {"consent_at": "0001-01-01T00:00:00Z"},
            "customer.consent_at is before",
        ),
    ],
)
def test_an_event_dated_out_of_range_is_not_decidable_naming_the_field(
    at: datetime, customer: dict[str, str], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        decidable(_event(at, **customer))


def test_an_event_within_range_is_decidable_as_it_is() -> None:
    for at in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(8999, 12, 31, tzinfo=timezone(timedelta(hours=-5))),
    ):
        event = _event(at, updated_at="1970-01-01T00:00:00Z", consent_at="2026-01-01T00:00:00+01:00")
        assert decidable(event) is event

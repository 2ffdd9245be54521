"""The customer snapshot the planner stores (repository.snapshot_json) is the JSONB value the former
`json.dumps(model_dump(mode="json"))` gave, for every snapshot the funnel-event contract can decode; where the
two writers disagree (a float that is not finite, a NUL) the former's very text is kept."""

from __future__ import annotations

import json
import math
import typing
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.notifier.adapters.repository import snapshot_json
from shared import funnel_event_structs as out
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.funnel_events import ProductRef, ProfileSnapshot, decode_funnel_event
from tests.funnel_mix import funnel_events_of_the_mix
from tests.strategies import INSTANTS, MONEY


def _former(snapshot: ProfileSnapshot) -> str:
    return json.dumps(snapshot.model_dump(mode="json", exclude_none=True))


def _number(text: str) -> tuple[str, Decimal, int]:
    # What PostgreSQL's numeric keeps of a JSON number: its value and its display scale (digits after the
    # point once the exponent is applied), so "1e16" and "1e+16" are one number and "1.0" and "1" are not.
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return ("number", value, max(0, -exponent))


def _jsonb(text: str) -> Any:
    """The JSON text as the value JSONB stores (object keys unordered, numbers as numeric)."""
    return json.loads(text, parse_float=_number, parse_int=_number)


def assert_same_stored(snapshot: ProfileSnapshot) -> None:
    assert _jsonb(snapshot_json(snapshot)) == _jsonb(_former(snapshot))


def test_the_snapshots_of_the_bench_mix_are_stored_as_before() -> None:
    seen = 0
    for funnel_event in funnel_events_of_the_mix(seed=11, run="snapshot-json"):
        decoded = decode_funnel_event(out.encode_funnel_event(funnel_event))
        assert_same_stored(decoded.profile)
        seen += 1
    assert seen > 1000


# Text without surrogates: the contract's decoder refuses them (below).
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
NAMES = st.none() | TEXT
PRODUCTS = st.builds(ProductRef, product_id=TEXT, title=NAMES, category=NAMES, price=st.none() | MONEY).map(
    lambda p: p.model_dump()
)
SNAPSHOTS = st.fixed_dictionaries(
    {"customer_id": TEXT, "stage": st.sampled_from(LoyaltyStage)},
    optional={
        "email": NAMES, "first_name": NAMES, "last_name": NAMES, "phone": NAMES, "locale": NAMES,
        "city": NAMES, "country": NAMES, "timezone": NAMES, "accepts_marketing": st.none() | st.booleans(),
        "consent_at": st.none() | INSTANTS, "health": st.sampled_from(Health),
        "orders_count": st.integers() | st.integers(min_value=2**63), "total_spent": MONEY,
        "currency": NAMES, "first_order_at": st.none() | INSTANTS, "last_order_at": st.none() | INSTANTS,
        "survey_level": st.sampled_from(SurveyLevel), "birthday": st.none() | st.dates(),
        "average_order_value": st.none() | MONEY, "median_days_between_orders": st.none() | st.floats(),
        "favourite_categories": st.lists(TEXT, max_size=3), "last_products": st.lists(PRODUCTS, max_size=3),
        "viewed_products": st.lists(PRODUCTS, max_size=3),
    },
).map(ProfileSnapshot.model_validate)  # fmt: skip


@settings(max_examples=400)
@given(SNAPSHOTS)
def test_any_snapshot_is_stored_as_before(snapshot: ProfileSnapshot) -> None:
    assert_same_stored(snapshot)


@pytest.mark.parametrize("median", [math.nan, math.inf, -math.inf])
def test_a_float_that_is_not_finite_is_written_as_before(median: float) -> None:
    # The contract's decoder takes NaN, Infinity and 1e400 (inf); PostgreSQL refuses json's NaN and Infinity,
    # where the model's serializer would have written null and the batch would have been stored.
    decoded = decode_funnel_event(json.dumps(_event(median_days_between_orders=median))).profile
    assert snapshot_json(decoded) == _former(decoded)
    assert "NaN" in snapshot_json(decoded) or "Infinity" in snapshot_json(decoded)


def test_a_nul_is_written_as_before() -> None:
    # PostgreSQL refuses \u0000 in JSONB either way, and its error quotes the text before it.
    decoded = decode_funnel_event(json.dumps(_event(first_name="a\u0000b"))).profile
    assert snapshot_json(decoded) == _former(decoded)


def test_a_lone_surrogate_cannot_reach_the_snapshot() -> None:
    # The one other input the two writers treat differently (json escapes it, the serializer refuses it):
    # the contract's decoder refuses it first.
    with pytest.raises(ValidationError, match="json_invalid"):
        decode_funnel_event(json.dumps(_event(first_name="a\ud800b")))


def test_the_only_float_of_a_snapshot_is_the_one_checked() -> None:
    # snapshot_json checks the float it knows of: a new float field must be checked too.
    def floats(model: type[Any]) -> set[str]:
        return {
            name
            for name, field in model.model_fields.items()
            if field.annotation is float or float in typing.get_args(field.annotation)
        }

    assert floats(ProfileSnapshot) == {"median_days_between_orders"}
    assert floats(ProductRef) == set()


def _event(**profile: Any) -> dict[str, Any]:
    return {
        "type": "customer_updated",
        "event_id": "e1",
        "store_id": "demo",
        "customer_id": "c1",
        "occurred_at": "2026-12-01T10:00:00Z",
        "caused_by": "s1",
        "profile": {"customer_id": "c1", "stage": "prospect", **profile},
        "payload": {},
    }

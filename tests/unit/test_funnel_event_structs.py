"""The segmenter builds funnel events as msgspec Structs (shared/funnel_event_structs.py) and writes their
bytes to the outbox: they must be the very bytes the contract's pydantic models (shared/funnel_events.py)
give for the same values, validated, as the segmenter wrote before, and what the notifier decodes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from services.segmenter.domain.funnel import erasure_notices, new_profile
from services.segmenter.domain.profile import OrderFact, ProductFact, Profile, SurveyFact, ViewedProduct
from shared import funnel_event_structs as out
from shared import funnel_events as contract
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from tests.funnel_mix import funnel_events_of_the_mix
from tests.strategies import INSTANTS, MONEY

_EVENT: TypeAdapter[Any] = TypeAdapter(contract.FunnelEvent)


def _values(value: Any) -> Any:
    """A Struct's values as plain Python values (dicts for Structs), for the models to validate."""
    if isinstance(value, msgspec.Struct):
        return {name: _values(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, tuple):
        return tuple(_values(v) for v in value)
    if isinstance(value, dict):
        return {k: _values(v) for k, v in value.items()}
    return value


def assert_same_bytes(event: out.FunnelEvent) -> None:
    encoded = out.encode_funnel_event(event)
    model = _EVENT.validate_python(_values(event))
    assert encoded == contract.encode_funnel_event(model)
    assert contract.decode_funnel_event(encoded) == model


def assert_same_snapshot(profile: Profile) -> None:
    snapshot = profile.snapshot()
    model = contract.ProfileSnapshot.model_validate(_values(snapshot))
    assert msgspec.json.encode(snapshot) == model.__pydantic_serializer__.to_json(model, exclude_none=True)


def test_the_funnel_events_of_the_mix_have_the_contracts_bytes() -> None:
    kinds: set[str] = set()
    for funnel_event in funnel_events_of_the_mix(seed=7, run="funnel-structs"):
        kinds.add(funnel_event.type)
        assert_same_bytes(funnel_event)
    assert {"order_placed", "stage_changed", "customer_updated", "survey_scored"} <= kinds


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
NAMES = st.none() | TEXT
PRODUCTS = st.builds(ProductFact, product_id=TEXT, title=NAMES, category=NAMES, price=st.none() | MONEY)
ORDERS = st.builds(
    OrderFact,
    order_id=TEXT,
    placed_at=INSTANTS,
    total=MONEY,
    refunded=MONEY,
    currency=st.sampled_from(["EUR", "USD"]),
    cancelled=st.booleans(),
    products=st.lists(PRODUCTS, max_size=4).map(tuple),
)
VIEWS = st.builds(
    ViewedProduct, product_id=TEXT, title=NAMES, category=NAMES, price=st.none() | MONEY, viewed_at=INSTANTS
)
SURVEYS = st.builds(
    SurveyFact, survey_id=TEXT, answered_at=INSTANTS, level=st.sampled_from(SurveyLevel),
    agreed=st.dictionaries(TEXT, st.integers()),
)  # fmt: skip
PROFILES = st.builds(
    lambda customer_id, orders, update: new_profile("demo", customer_id).model_copy(
        update={**update, "orders": tuple(sorted(orders, key=lambda o: (o.placed_at, o.order_id)))}
    ),
    TEXT,
    st.lists(ORDERS, max_size=5),
    st.fixed_dictionaries(
        {
            "email": NAMES, "first_name": NAMES, "last_name": NAMES, "phone": NAMES, "locale": NAMES,
            "city": NAMES, "country": NAMES, "timezone": NAMES, "birthday": st.none() | st.dates(),
            "accepts_marketing": st.none() | st.booleans(),
            "contact_at": st.dictionaries(st.sampled_from(["accepts_marketing", "email"]), INSTANTS),
            "stage": st.sampled_from(LoyaltyStage), "health": st.sampled_from(Health),
            "viewed": st.lists(VIEWS, max_size=4).map(tuple), "survey": st.none() | SURVEYS,
        }
    ),
)  # fmt: skip
ITEMS = st.builds(
    out.CartItem, product_id=TEXT, title=NAMES, category=NAMES, quantity=st.integers(), price=MONEY
)
PAYLOADS: dict[type[out.FunnelEvent], st.SearchStrategy[Any]] = {
    out.StageChangedEvent: st.builds(
        out.StageChanged,
        from_stage=st.sampled_from(LoyaltyStage),
        to_stage=st.sampled_from(LoyaltyStage),
        reason=TEXT,
    ),
    out.HealthChangedEvent: st.builds(
        out.HealthChanged, from_health=st.sampled_from(Health), to_health=st.sampled_from(Health), reason=TEXT
    ),
    out.CartAbandonedEvent: st.builds(
        out.CartAbandoned,
        cart_id=TEXT,
        items=st.lists(ITEMS, max_size=3).map(tuple),
        total=MONEY,
        currency=NAMES,
        recovery_url=NAMES,
        last_activity_at=INSTANTS,
        source=st.sampled_from(["timer", "storefront"]),
    ),
    out.SurveyScoredEvent: st.builds(
        out.SurveyScored,
        survey_id=TEXT,
        level=st.sampled_from(SurveyLevel),
        agreed=st.dictionaries(TEXT, st.integers()),
        csat=st.none() | st.integers(),
        ces=st.none() | st.integers(),
        nps=st.none() | st.integers(),
    ),
    out.OrderPlacedFunnelEvent: st.builds(
        out.OrderRecorded,
        order_id=TEXT,
        total=MONEY,
        currency=TEXT,
        items=st.lists(ITEMS, max_size=3).map(tuple),
        discount_codes=st.lists(TEXT, max_size=2).map(tuple),
        cart_id=NAMES,
    ),
    out.CustomerUpdatedEvent: st.builds(out.CustomerUpdated, changed=st.lists(TEXT, max_size=3).map(tuple)),
    out.BirthdayDueEvent: st.builds(out.BirthdayDue, birthday=st.dates(), days_before=st.integers()),
    out.CustomerErasedFunnelEvent: st.none(),
}


@settings(max_examples=300, deadline=None)
@given(profile=PROFILES)
def test_any_profiles_snapshot_has_the_contracts_bytes(profile: Profile) -> None:
    assert_same_snapshot(profile)


@st.composite
def _events(draw: st.DrawFn) -> out.FunnelEvent:
    build = draw(st.sampled_from(list(PAYLOADS)))
    payload = draw(PAYLOADS[build])
    profile = draw(PROFILES)
    values: dict[str, Any] = {
        "schema_version": 1,
        "event_id": draw(TEXT),
        "store_id": profile.store_id,
        "customer_id": profile.customer_id,
        "occurred_at": draw(INSTANTS),
        "caused_by": draw(TEXT),
        "profile": profile.snapshot(),
        "type": build.TYPE,
    }
    if payload is not None:
        values["payload"] = payload
    event: out.FunnelEvent = build(**values)
    return event


@settings(max_examples=400, deadline=None)
@given(event=_events())
def test_any_funnel_event_has_the_contracts_bytes(event: out.FunnelEvent) -> None:
    assert_same_bytes(event)
    assert event.partition_key == _EVENT.validate_python(_values(event)).partition_key


def test_a_birthday_is_a_date_and_a_median_a_float() -> None:
    # The two value types the mix rarely holds, written as the models write them.
    at = datetime(2026, 1, 5, tzinfo=UTC)
    orders = tuple(
        OrderFact(
            order_id=f"o{n}", placed_at=at + timedelta(days=n * 7.5), total=Decimal("10"), currency="EUR"
        )
        for n in range(3)
    )
    profile = new_profile("demo", "c1").model_copy(update={"orders": orders, "birthday": date(1990, 2, 28)})
    assert profile.snapshot().median_days_between_orders == 7.5
    assert_same_snapshot(profile)


def test_an_erasure_notice_has_the_contracts_bytes_without_a_payload() -> None:
    # The one funnel event whose model has no payload: its Struct holds None there (every event is built by
    # one call with a payload), which must not reach the bytes.
    at = datetime(2026, 3, 1, tzinfo=UTC)
    notices = erasure_notices("demo", ["c2", "c1"], "shopify:redact-1", at)
    assert [n.customer_id for n in notices] == ["c1", "c2"]
    for notice in notices:
        assert notice.type == "customer_erased"
        assert b'"payload"' not in out.encode_funnel_event(notice)
        assert_same_bytes(notice)

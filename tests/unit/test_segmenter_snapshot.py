"""Snapshots and funnel events are built without validating their values again (domain/profile.py
`unvalidated`): they must be exactly what the validating constructors build."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.segmenter.domain.funnel import decide
from services.segmenter.domain.profile import OrderFact, ProductFact, Profile, ViewedProduct
from shared.funnel_events import ProfileSnapshot, decode_funnel_event, encode_funnel_event
from shared.funnel_rules import FunnelRules
from tests.builders import canonical_event


def _profile() -> Profile:
    at = datetime(2026, 1, 5, tzinfo=UTC)
    return Profile(
        store_id="s1",
        customer_id="c1",
        email="ines@example.com",
        contact_at={"accepts_marketing": at},
        accepts_marketing=True,
        orders=(
            OrderFact(
                order_id="o1",
                placed_at=at,
                total=Decimal("48.00"),
                currency="EUR",
                products=(ProductFact(product_id="p-mug", title="Mug", category="mugs"),),
            ),
        ),
        viewed=(ViewedProduct(product_id="p-cup", title="Cup", price=Decimal("9.50"), viewed_at=at),),
    )


def test_a_snapshot_is_what_the_validating_constructor_builds() -> None:
    snapshot = _profile().snapshot()
    validated = ProfileSnapshot(**snapshot.__dict__)
    assert snapshot == validated
    assert snapshot.model_fields_set == validated.model_fields_set
    assert snapshot.model_dump_json(exclude_none=True) == validated.model_dump_json(exclude_none=True)


def test_a_funnel_event_is_what_decoding_its_own_json_gives() -> None:
    event = canonical_event(
        "s1",
        "order_placed",
        datetime(2026, 1, 6, tzinfo=UTC),
        {"store_customer_id": "c1"},
        {"order_id": "o2", "total": "20.00", "currency": "EUR", "line_items": [{"product_id": "p-cup"}]},
    )
    decision = decide(_profile(), event, FunnelRules(), "c1")
    assert decision.funnel_events
    for funnel_event in decision.funnel_events:
        encoded = encode_funnel_event(funnel_event)
        decoded = decode_funnel_event(encoded)
        assert decoded == funnel_event
        assert encode_funnel_event(decoded) == encoded

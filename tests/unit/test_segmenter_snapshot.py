"""Snapshots and funnel events are built without validating their values again, as msgspec Structs
(shared/funnel_event_structs.py): they must be what the contract's validating constructors build, byte for
byte once encoded. (Until they were Structs, the snapshot was the pydantic model built by `unvalidated`, and
it was compared with the model's validating constructor as a model.)"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec

from services.segmenter.domain.funnel import decide
from services.segmenter.domain.profile import OrderFact, ProductFact, Profile, ViewedProduct
from shared.funnel_event_structs import encode_funnel_event
from shared.funnel_events import ProfileSnapshot, decode_funnel_event
from shared.funnel_rules import FunnelRules
from tests.builders import segmenter_event


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
    values = msgspec.structs.asdict(snapshot)
    refs = ("last_products", "viewed_products")
    validated = ProfileSnapshot(
        **{k: tuple(msgspec.structs.asdict(r) for r in v) if k in refs else v for k, v in values.items()}
    )
    assert msgspec.json.encode(snapshot) == validated.model_dump_json(exclude_none=True).encode()
    assert validated.viewed_products[0].price == Decimal("9.50")
    assert validated.last_products[0].category == "mugs"


def test_a_funnel_event_is_what_decoding_its_own_json_gives() -> None:
    event = segmenter_event(
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
        assert decoded.event_id == funnel_event.event_id
        assert decoded.profile.orders_count == funnel_event.profile.orders_count == 2
        assert decoded.__pydantic_serializer__.to_json(decoded, exclude_none=True) == encoded

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.segmenter.domain.funnel import decide
from services.segmenter.domain.profile import Profile
from shared.events import OrderPlacedEvent, StorefrontEvent, decode_event
from shared.examples import example_files
from shared.funnel import LoyaltyStage
from shared.funnel_events import StageChangedEvent

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def order(event_id: str, order_id: str, *, at: datetime = T0, total: str = "50.00") -> OrderPlacedEvent:
    return OrderPlacedEvent.model_validate(
        {
            "event_id": event_id,
            "store_id": "demo",
            "customer": {
                "store_customer_id": "c1",
                "email": "Ann@Example.com",
                "first_name": "Ann",
                "city": "Lyon",
            },
            "occurred_at": at,
            "received_at": at,
            "source": "shopify",
            "payload": {"order_id": order_id, "total": total, "currency": "EUR"},
        }
    )


def test_first_order_makes_a_prospect_first_time() -> None:
    decision = decide(None, order("e1", "o1"))
    assert decision.profile.stage == LoyaltyStage.FIRST_TIME
    assert decision.profile.orders_count == 1
    assert decision.profile.email == "ann@example.com"
    [transition] = decision.transitions
    assert (transition.from_stage, transition.to_stage) == (LoyaltyStage.PROSPECT, LoyaltyStage.FIRST_TIME)
    [event] = decision.funnel_events
    assert isinstance(event, StageChangedEvent)
    assert event.payload.to_stage == LoyaltyStage.FIRST_TIME
    assert event.profile.first_name == "Ann"
    assert event.profile.city == "Lyon"
    assert event.caused_by == "e1"


def test_second_order_makes_a_repeat_customer() -> None:
    first = decide(None, order("e1", "o1", total="10.00"))
    second = decide(first.profile, order("e2", "o2", at=T0 + timedelta(days=20), total="15.50"))
    assert second.profile.stage == LoyaltyStage.REPEAT
    assert second.profile.orders_count == 2
    assert str(second.profile.total_spent) == "25.50"
    assert second.profile.first_order_at == T0
    assert second.profile.last_order_at == T0 + timedelta(days=20)
    assert [t.to_stage for t in second.transitions] == [LoyaltyStage.REPEAT]


def test_the_same_order_under_a_new_delivery_changes_nothing() -> None:
    first = decide(None, order("e1", "o1"))
    again = decide(first.profile, order("e1-retry", "o1"))
    assert again.profile == first.profile
    assert again.transitions == ()
    assert again.funnel_events == ()


def test_an_out_of_order_older_order_keeps_first_and_last_order_right() -> None:
    later = decide(None, order("e2", "o2", at=T0 + timedelta(days=5)))
    earlier = decide(later.profile, order("e1", "o1", at=T0))
    assert earlier.profile.first_order_at == T0
    assert earlier.profile.last_order_at == T0 + timedelta(days=5)


def test_customer_update_without_orders_keeps_a_prospect_and_emits_nothing() -> None:
    event = decode_event(json.dumps(_example("customer_upserted")))
    decision = decide(None, event)
    assert decision.profile.stage == LoyaltyStage.PROSPECT
    assert decision.funnel_events == ()
    assert decision.profile.accepts_marketing is True


def test_missing_fields_in_a_later_event_do_not_erase_known_facts() -> None:
    known = decide(None, order("e1", "o1")).profile
    sparse = OrderPlacedEvent.model_validate(
        {
            "event_id": "e2",
            "store_id": "demo",
            "customer": {"store_customer_id": "c1"},
            "occurred_at": T0,
            "received_at": T0,
            "source": "api",
            "payload": {"order_id": "o2", "total": "1.00", "currency": "EUR"},
        }
    )
    assert decide(known, sparse).profile.first_name == "Ann"


def test_orders_never_move_a_customer_backwards() -> None:
    loyal = Profile(store_id="demo", customer_id="c1", stage=LoyaltyStage.LOYAL, orders_count=3)
    decision = decide(loyal, order("e9", "o9"))
    assert decision.profile.stage == LoyaltyStage.LOYAL
    assert decision.transitions == ()


def _example(name: str) -> dict[str, object]:
    [path] = [p for p in example_files("storefront-events") if p.stem == name]
    data: dict[str, object] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("path", example_files("storefront-events"), ids=lambda p: p.stem)
def test_every_storefront_example_goes_through_the_funnel_decision(path: Path) -> None:
    event: StorefrontEvent = decode_event(path.read_bytes())
    decision = decide(None, event)
    assert decision.profile.customer_id == event.customer.key
    assert decision.profile.store_id == event.store_id
    expected = LoyaltyStage.FIRST_TIME if event.type == "order_placed" else LoyaltyStage.PROSPECT
    assert decision.profile.stage == expected

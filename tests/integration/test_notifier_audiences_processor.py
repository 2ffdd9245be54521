"""Audiences follow funnel events through the notifier's processor (its membership hook), real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.adapters.tables import audience_members, customers
from services.notifier.entrypoints.processor import MessagePlanner
from shared.funnel_events import FunnelEvent
from shared.stores import StoreConfig, StoreRegistry
from tests.builders import funnel_event

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


async def _process(engine: AsyncEngine, store: StoreConfig, events: list[FunnelEvent]) -> None:
    planner = MessagePlanner(
        engine, StoreRegistry([store]), lambda: T0, refresh_audiences=refresh_memberships
    )
    await planner(events)


async def _members(engine: AsyncEngine, store_id: str) -> set[tuple[str, str, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                audience_members.c.audience, audience_members.c.customer_id, audience_members.c.contact
            ).where(audience_members.c.store_id == store_id, audience_members.c.member)
        )
        return {(r.audience, r.customer_id, r.contact is not None) for r in rows}


async def test_funnel_events_move_customers_between_audiences(engine: AsyncEngine, store_id: str) -> None:
    store = StoreConfig.model_validate({"store_id": store_id, "name": "Test", "api_key": "k"})
    old = T0 - timedelta(days=400)  # triggers this old send nothing: only the audiences move
    abandoned = funnel_event(
        "cart_abandoned",
        store_id,
        "c1",
        T0 - timedelta(hours=2),
        {
            "cart_id": "cart-1",
            "last_activity_at": (T0 - timedelta(hours=3)).isoformat(),
            "source": "timer",
        },
    )
    loyal = funnel_event(
        "stage_changed",
        store_id,
        "c2",
        old,
        {"from_stage": "repeat", "to_stage": "loyal", "reason": "third order"},
        stage="loyal",
    )
    await _process(engine, store, [abandoned, loyal])
    assert await _members(engine, store_id) == {
        ("all_customers", "c1", True),
        ("cart_abandoners", "c1", True),
        ("all_customers", "c2", True),
        ("loyal_and_advocates", "c2", True),
    }

    withdrawn = funnel_event(
        "customer_updated", store_id, "c2", old, {"changed": ["accepts_marketing"]},
        stage="loyal", accepts_marketing=False,
    )  # fmt: skip
    erased = funnel_event("customer_erased", store_id, "c1", T0)
    await _process(engine, store, [withdrawn, erased])
    assert await _members(engine, store_id) == {
        ("all_customers", "c2", False),
        ("loyal_and_advocates", "c2", False),
    }


async def test_a_batch_notes_each_customers_latest_abandoned_cart(engine: AsyncEngine, store_id: str) -> None:
    store = StoreConfig.model_validate({"store_id": store_id, "name": "Test", "api_key": "k"})

    def abandoned(customer: str, hours_ago: int) -> FunnelEvent:
        at = T0 - timedelta(hours=hours_ago)
        payload = {"cart_id": f"cart-{hours_ago}", "last_activity_at": at.isoformat(), "source": "timer"}
        return funnel_event("cart_abandoned", store_id, customer, at, payload)

    # Out of time order within a batch and across batches: the latest abandonment stays.
    await _process(engine, store, [abandoned("c1", 2), abandoned("c1", 5), abandoned("c2", 4)])
    await _process(engine, store, [abandoned("c2", 6)])
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(customers.c.customer_id, customers.c.last_cart_abandoned_at).where(
                customers.c.store_id == store_id
            )
        )
        noted = dict(rows.all())
    assert noted == {"c1": T0 - timedelta(hours=2), "c2": T0 - timedelta(hours=4)}

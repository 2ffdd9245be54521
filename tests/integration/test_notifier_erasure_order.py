"""A customer's erasure among other funnel events in one batch of the notifier's (processor.py), through
PostgreSQL: it reaches what came before it in the batch and spares what came after it, as it does when the
same events arrive in batches of their own. The segmenter publishes a customer's funnel events in order, on
one partition, so a batch holds them in the order they were said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.adapters.tables import customers, messages
from services.notifier.entrypoints.processor import MessagePlanner
from shared.funnel_events import FunnelEvent
from shared.stores import StoreConfig, StoreRegistry
from tests.builders import funnel_event

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
ONE_BATCH = pytest.mark.parametrize("one_batch", [False, True], ids=["batch by batch", "one batch"])


async def _process(engine: AsyncEngine, store_id: str, events: list[FunnelEvent], one_batch: bool) -> None:
    store = StoreConfig.model_validate({"store_id": store_id, "name": "Test", "api_key": "k"})
    planner = MessagePlanner(
        engine, StoreRegistry([store]), lambda: T0, refresh_audiences=refresh_memberships
    )
    for batch in [events] if one_batch else [[e] for e in events]:
        await planner(batch)


async def _customer(engine: AsyncEngine, store_id: str, customer_id: str) -> Any:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(customers).where(customers.c.store_id == store_id, customers.c.customer_id == customer_id)
        )
        return found.one()


def _first_order(store_id: str, customer_id: str, at: datetime, **profile: Any) -> FunnelEvent:
    """The step to first-time buyer, which plans the welcome email."""
    change = {"from_stage": "prospect", "to_stage": "first_time", "reason": "1 order"}
    return funnel_event("stage_changed", store_id, customer_id, at, change, stage="first_time", **profile)


@ONE_BATCH
async def test_an_erasure_reaches_the_message_planned_just_before_it(
    engine: AsyncEngine, store_id: str, one_batch: bool
) -> None:
    events = [
        _first_order(store_id, "c1", T0 - timedelta(minutes=5), first_name="Ines"),
        funnel_event("customer_erased", store_id, "c1", T0),
    ]
    await _process(engine, store_id, events, one_batch)
    async with engine.connect() as conn:
        found = await conn.execute(
            select(messages.c.flow, messages.c.to_address, messages.c.context).where(
                messages.c.store_id == store_id, messages.c.customer_id == "c1"
            )
        )
        rows = [tuple(r) for r in found.all()]
    # The welcome stays counted, without its address or what it would have said.
    assert rows == [("welcome", None, {})]
    assert (await _customer(engine, store_id, "c1")).email is None


@ONE_BATCH
async def test_details_given_after_an_erasure_stay(
    engine: AsyncEngine, store_id: str, one_batch: bool
) -> None:
    """The customer comes back after the erasure and signs up for the newsletter with a new address."""
    events = [
        funnel_event("customer_erased", store_id, "c1", T0 - timedelta(minutes=5)),
        funnel_event(
            "customer_updated",
            store_id,
            "c1",
            T0,
            {"changed": ["email", "accepts_marketing"]},
            email="ines@new.example",
            accepts_marketing=True,
            consent_at=T0.isoformat(),
        ),
    ]
    await _process(engine, store_id, events, one_batch)
    customer = await _customer(engine, store_id, "c1")
    assert (customer.email, customer.accepts_marketing) == ("ines@new.example", True)


def _came_back(store_id: str, late: bool) -> list[FunnelEvent]:
    """Ines's welcome, her erasure, then, back with a new address and consent, a cart she left: in the
    order the segmenter tells them when the erasure reaches it first, or when it reaches it last (then its
    snapshot carries what she said since, as the segmenter keeps it)."""
    erased_at, back = T0 - timedelta(hours=3), T0 - timedelta(hours=2)
    new: dict[str, Any] = {
        "email": "ines@new.example",
        "accepts_marketing": True,
        "consent_at": back.isoformat(),
    }
    welcome = _first_order(store_id, "c1", T0 - timedelta(hours=4), first_name="Ines")
    updated = funnel_event(
        "customer_updated", store_id, "c1", back, {"changed": ["email", "accepts_marketing"]}, **new
    )
    left = {"cart_id": "k2", "last_activity_at": back.isoformat(), "source": "timer"}
    abandoned = funnel_event("cart_abandoned", store_id, "c1", T0 - timedelta(hours=1), left, **new)
    if late:
        return [
            welcome,
            updated,
            abandoned,
            funnel_event("customer_erased", store_id, "c1", erased_at, **new),
        ]
    return [welcome, funnel_event("customer_erased", store_id, "c1", erased_at), updated, abandoned]


@ONE_BATCH
async def test_an_erasure_that_reaches_us_late_keeps_what_the_customer_said_after_it(
    engine: AsyncEngine, store_id: str, one_batch: bool
) -> None:
    """The same outcome whichever reached the segmenter first, the erasure or what Ines said after it: the
    welcome planned before the erasure keeps no address; her new address, her consent and the abandoned
    cart's message to that address stay."""
    states = {}
    for late in (False, True):
        store = f"{store_id}-{'late' if late else 'first'}"
        await _process(engine, store, _came_back(store, late), one_batch)
        customer = await _customer(engine, store, "c1")
        async with engine.connect() as conn:
            found = await conn.execute(
                select(messages.c.flow, messages.c.to_address, messages.c.context != {})
                .where(messages.c.store_id == store)
                .order_by(messages.c.flow)
            )
            sent = [tuple(r) for r in found.all()]
        states[late] = (customer.email, customer.accepts_marketing, customer.consent_updated_at, sent)
    assert states[True] == states[False]
    assert states[True] == (
        "ines@new.example",
        True,
        T0 - timedelta(hours=2),
        [("abandoned_cart", "ines@new.example", True), ("welcome", None, False)],
    )

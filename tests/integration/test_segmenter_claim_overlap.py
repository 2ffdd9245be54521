"""A batch's identifiers are worked out while its claim runs, for all its events (processor.py): a batch that
mixes events already processed, new ones and a second copy of a new one applies each new event once and
looks up only the fresh events' customers; one that meets a running transaction holding some of its events
decides the rest by that transaction's rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import identities, profiles
from services.segmenter.domain.instants import standardise_event
from services.segmenter.entrypoints.processor import FunnelProcessor
from tests.integration.test_segmenter_engine import cart, event, order, registry
from tests.integration.test_segmenter_profile_cache import stored

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def test_a_batch_of_old_new_and_repeated_events_applies_each_new_event_once(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    ann = {"store_customer_id": "ann", "email": "ann@x.io"}
    bob = {"store_customer_id": "bob", "email": "bob@x.io"}
    first = order(store_id, ann, "o1", T0)
    await processor([first])
    second = order(store_id, bob, "o2", T0 + timedelta(hours=1))
    third = order(store_id, ann, "o3", T0 + timedelta(days=1))
    # ann's first order again (already processed), bob's order twice, ann's second order.
    await processor([first, second, second, third])
    assert [o.order_id for o in (await stored(engine, store_id, "ann")).orders] == ["o1", "o3"]
    assert [o.order_id for o in (await stored(engine, store_id, "bob")).orders] == ["o2"]
    async with engine.connect() as conn:
        customers = (
            await conn.execute(
                select(func.count()).select_from(profiles).where(profiles.c.store_id == store_id)
            )
        ).scalar_one()
        bobs = (
            await conn.execute(
                select(identities.c.identifier).where(
                    identities.c.store_id == store_id, identities.c.customer_id == "bob"
                )
            )
        ).scalars()
        assert customers == 2
        assert "email:bob@x.io" in set(bobs)


async def _waiting_for_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        )
        return bool(waiting.scalar_one())


async def test_a_batch_that_meets_a_running_transaction_with_some_of_its_events_decides_the_rest_by_its_rows(
    engine: AsyncEngine, store_id: str
) -> None:
    """A batch that a running transaction applied in part (a redelivery during a rebalance) waits for it at
    its claim, which then says which of its events are new; those are looked up only after that wait, so
    they are decided by that transaction's rows (here an anonymous id it linked to a customer). Looked up
    before the wait, the anonymous cart would make a new profile: the fourteenth round's claim after the
    look-ups had to look them up again (bench/README.md)."""
    stores = registry(store_id)
    await FunnelProcessor(engine, stores)([order(store_id, {"store_customer_id": "ann"}, "o1", T0)])
    link = event(
        store_id,
        "identity_linked",
        {"previous_id": "a-9"},
        T0 + timedelta(hours=1),
        store_customer_id="ann",
        anonymous_id="a-9",
    )
    anonymous_cart = cart(store_id, {"anonymous_id": "a-9"}, "k9", T0 + timedelta(hours=2))
    for e in (link, anonymous_cart):
        standardise_event(e)
    async with engine.connect() as first, first.begin():
        # The first instance has applied the link (anonymous id a-9 is ann) and not committed yet.
        await FunnelProcessor(engine, stores)._batch(first, [link])
        second = asyncio.create_task(FunnelProcessor(engine, stores)([link, anonymous_cart]))
        for _ in range(200):
            if await _waiting_for_a_lock(engine):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the second batch never waited for the first transaction")
    await asyncio.wait_for(second, 10)
    ann = await stored(engine, store_id, "ann")
    assert "anon:a-9" in ann.identifiers
    assert [c.cart_id for c in ann.carts] == ["k9"]  # not a new anonymous profile's
    async with engine.connect() as conn:
        count = await conn.execute(
            select(func.count()).select_from(profiles).where(profiles.c.store_id == store_id)
        )
        assert count.scalar_one() == 1

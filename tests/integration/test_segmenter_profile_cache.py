"""The segmenter keeps the profiles it wrote in memory (adapters/profile_cache.py) and takes one from there
only while its row still holds that very write: whatever another writer did since is read again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.profile_cache import ProfileCache
from services.segmenter.adapters.tables import profiles
from services.segmenter.domain.profile import Profile
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from tests.integration.test_segmenter_engine import cart, event, funnel_events, order, registry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def stored(engine: AsyncEngine, store_id: str, customer_id: str) -> Profile:
    async with engine.connect() as conn:
        facts = (
            await conn.execute(
                select(profiles.c.facts).where(
                    profiles.c.store_id == store_id, profiles.c.customer_id == customer_id
                )
            )
        ).scalar_one()
    return Profile.model_validate(facts)


async def test_the_next_batch_takes_the_profile_it_wrote_from_memory(
    engine: AsyncEngine, store_id: str
) -> None:
    cache = ProfileCache(100)
    processor = FunnelProcessor(engine, registry(store_id), profile_cache=cache)
    who = {"store_customer_id": "c1", "email": "c1@x.io"}
    await processor([order(store_id, who, "o1", T0)])
    (version,) = cache.versions([(store_id, "c1")])
    async with engine.connect() as conn:
        xmin = (
            await conn.execute(
                text("SELECT xmin::text FROM segmenter.profiles WHERE store_id = :s AND customer_id = 'c1'"),
                {"s": store_id},
            )
        ).scalar_one()
    assert version == xmin
    await processor([order(store_id, who, "o2", T0 + timedelta(days=1))])
    after = await stored(engine, store_id, "c1")
    assert [o.order_id for o in after.orders] == ["o1", "o2"]
    assert after.stage == "repeat"


async def test_a_row_another_writer_changed_since_is_read_again(engine: AsyncEngine, store_id: str) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    who = {"store_customer_id": "c1", "email": "c1@x.io"}
    await processor([order(store_id, who, "o1", T0)])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE segmenter.profiles SET facts = jsonb_set(facts, '{first_name}', '\"Zoe\"') "
                "WHERE store_id = :s AND customer_id = 'c1'"
            ),
            {"s": store_id},
        )
    await processor([order(store_id, {"store_customer_id": "c1"}, "o2", T0 + timedelta(days=1))])
    after = await stored(engine, store_id, "c1")
    assert after.first_name == "Zoe"  # not overwritten by the copy held in memory
    assert [o.order_id for o in after.orders] == ["o1", "o2"]


async def test_two_instances_writing_the_same_customer_in_turn_each_see_the_others_write(
    engine: AsyncEngine, store_id: str
) -> None:
    stores = registry(store_id)
    one, other = FunnelProcessor(engine, stores), FunnelProcessor(engine, stores)
    who = {"store_customer_id": "c1"}
    await one([order(store_id, who, "o1", T0)])
    await other([order(store_id, who, "o2", T0 + timedelta(days=1))])
    await one([event(store_id, "customer_upserted", None, T0 + timedelta(days=2), first_name="Ana", **who)])
    await other([order(store_id, who, "o3", T0 + timedelta(days=3))])
    await one([order(store_id, who, "o4", T0 + timedelta(days=4))])
    after = await stored(engine, store_id, "c1")
    assert [o.order_id for o in after.orders] == ["o1", "o2", "o3", "o4"]
    assert after.first_name == "Ana"


async def test_the_consumer_and_the_timers_sharing_the_cache_see_each_others_writes(
    engine: AsyncEngine, store_id: str
) -> None:
    stores = registry(store_id, cart_abandonment=20)
    cache = ProfileCache(100)
    processor = FunnelProcessor(engine, stores, profile_cache=cache)
    worker = TimerWorker(engine, stores, lambda: T0 + timedelta(seconds=30), profile_cache=cache)
    who = {"store_customer_id": "c1"}
    await processor([cart(store_id, who, "k1", T0)])
    await worker.fire_due()  # abandons the cart on the profile the consumer wrote
    await processor(
        [event(store_id, "customer_upserted", None, T0 + timedelta(seconds=40), first_name="Ana", **who)]
    )
    after = await stored(engine, store_id, "c1")
    assert after.first_name == "Ana"
    assert [c.abandoned_at for c in after.carts] == [T0 + timedelta(seconds=20)]
    assert [e.type for e in await funnel_events(engine, store_id)] == ["cart_abandoned", "customer_updated"]

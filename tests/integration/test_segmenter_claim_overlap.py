"""A batch's identifiers are worked out while its claim runs, for all its events (processor.py): a batch that
mixes events already processed, new ones and a second copy of a new one applies each new event once and
looks up only the fresh events' customers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import identities, profiles
from services.segmenter.entrypoints.processor import FunnelProcessor
from tests.integration.test_segmenter_engine import order, registry
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

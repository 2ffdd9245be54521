"""Shopify's shop/redact through the segmenter's batch handler (processor.py): every customer of the store
loses their personal data, those stored and those the same batch made before it, and the notifier hears of
it once, for the whole store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import identities, profiles
from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.events import SHOP_WIDE
from tests.integration.test_segmenter_engine import event, funnel_events, order, registry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


async def _emails(engine: AsyncEngine, store_id: str) -> dict[str, tuple[str | None, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(profiles.c.customer_id, profiles.c.email, profiles.c.facts).where(
                profiles.c.store_id == store_id
            )
        )
        return {r.customer_id: (r.email, r.facts["erased"]) for r in rows.all()}


async def test_a_shop_erasure_erases_the_stored_customers_and_those_its_own_batch_made(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    await processor([order(store_id, {"store_customer_id": "ann", "email": "ann@x.io"}, "o1", T0)])
    redact = event(store_id, "customer_erased", None, T0 + timedelta(days=2), store_customer_id=SHOP_WIDE)
    # bob is new in the very batch that erases the shop, ann changes in it.
    await processor(
        [
            order(store_id, {"store_customer_id": "bob", "email": "bob@x.io"}, "o2", T0 + timedelta(days=1)),
            order(store_id, {"store_customer_id": "ann"}, "o3", T0 + timedelta(days=1)),
            redact,
        ]
    )
    assert await _emails(engine, store_id) == {"ann": (None, True), "bob": (None, True)}
    erased = [e for e in await funnel_events(engine, store_id) if e.type == "customer_erased"]
    assert [(e.customer_id, e.caused_by) for e in erased] == [(SHOP_WIDE, redact.event_id)]
    # A customer heard of after the erasure is kept.
    await processor(
        [order(store_id, {"store_customer_id": "cy", "email": "cy@x.io"}, "o4", T0 + timedelta(days=3))]
    )
    assert (await _emails(engine, store_id))["cy"] == ("cy@x.io", False)


async def test_a_profile_merged_away_in_the_erasing_batch_is_erased_and_still_points_at_its_survivor(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    await processor([order(store_id, {"anonymous_id": "a-1"}, "o1", T0)])
    link = {"store_customer_id": "u-1", "anonymous_id": "a-1"}
    identify = event(store_id, "customer_upserted", None, T0 + timedelta(hours=1), **link)
    redact = event(store_id, "customer_erased", None, T0 + timedelta(days=2), store_customer_id=SHOP_WIDE)
    await processor([identify, redact])
    async with engine.connect() as conn:
        owners = await conn.execute(
            select(identities.c.identifier, identities.c.customer_id).where(identities.c.store_id == store_id)
        )
        assert dict(owners.all())["order:o1"] == "u-1"
        merged = await conn.execute(
            select(profiles.c.customer_id, profiles.c.merged_into).where(profiles.c.store_id == store_id)
        )
        assert dict(merged.all()) == {"anon:a-1": "u-1", "u-1": None}
    assert await _emails(engine, store_id) == {"anon:a-1": (None, True), "u-1": (None, True)}

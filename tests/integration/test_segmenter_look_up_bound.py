"""The bound on a profile's emails and anonymous ids (`identity.MAX_LOOK_UPS`) through the segmenter's batch
handler (processor.py) and PostgreSQL: a customer sent a new anonymous id with every call (as anyone can, with
the store's public browser key) holds no more than the bound, the identities table holds exactly the
look-ups the profile lists, and a merge past the bound deletes the absorbed profile's look-ups that it left
out (which the merge's repointing would otherwise have given the survivor), whether what follows comes in
the same batch or a later one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import identities, profiles
from services.segmenter.domain.identity import MAX_LOOK_UPS
from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.storefront_event_structs import StorefrontEvent
from tests.integration.test_segmenter_engine import event, order, registry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
VIEW = {"product": {"product_id": "p1"}}


async def _look_ups(engine: AsyncEngine, store_id: str) -> dict[str, str]:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(identities.c.identifier, identities.c.customer_id).where(identities.c.store_id == store_id)
        )
        return {r.identifier: r.customer_id for r in found.all()}


async def _listed(engine: AsyncEngine, store_id: str, customer_id: str) -> list[str]:
    """The identifiers the customer's stored profile lists."""
    async with engine.connect() as conn:
        facts = await conn.scalar(
            select(profiles.c.facts).where(
                profiles.c.store_id == store_id, profiles.c.customer_id == customer_id
            )
        )
    assert facts is not None
    held: list[str] = facts["identifiers"]
    return held


def _visits(store_id: str, first: int, count: int) -> list[StorefrontEvent]:
    """Customer u-1 named with a new anonymous id each time."""
    return [
        event(
            store_id,
            "product_viewed",
            VIEW,
            T0 + timedelta(seconds=k),
            store_customer_id="u-1",
            anonymous_id=f"a-{k}",
        )
        for k in range(first, first + count)
    ]


async def _at_the_bound(processor: FunnelProcessor, store_id: str) -> None:
    extra = 10
    for first in range(0, MAX_LOOK_UPS + extra, 250):
        await processor(_visits(store_id, first, min(250, MAX_LOOK_UPS + extra - first)))


async def test_a_customer_given_a_new_anonymous_id_with_every_call_holds_no_more_than_the_bound(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    await _at_the_bound(processor, store_id)
    look_ups = await _look_ups(engine, store_id)
    mine = sorted(i for i, c in look_ups.items() if c == "u-1")
    assert len(mine) == MAX_LOOK_UPS + 1  # and its own id
    assert mine == await _listed(engine, store_id, "u-1")
    # The first ids came first; those past the bound find no one ...
    assert look_ups["anon:a-0"] == "u-1"
    assert f"anon:a-{MAX_LOOK_UPS}" not in look_ups
    later = T0 + timedelta(days=1)
    await processor([event(store_id, "product_viewed", VIEW, later, anonymous_id=f"a-{MAX_LOOK_UPS + 3}")])
    assert (await _look_ups(engine, store_id))[f"anon:a-{MAX_LOOK_UPS + 3}"] == f"anon:a-{MAX_LOOK_UPS + 3}"
    # ... while an order's id is still the customer's (a refund finds its order by it).
    await processor([order(store_id, {"store_customer_id": "u-1", "anonymous_id": "z"}, "o1", later)])
    look_ups = await _look_ups(engine, store_id)
    assert look_ups["order:o1"] == "u-1"
    assert "anon:z" not in look_ups
    assert sorted(i for i, c in look_ups.items() if c == "u-1") == await _listed(engine, store_id, "u-1")


@pytest.mark.parametrize("one_batch", [False, True], ids=["batch by batch", "one batch"])
async def test_a_merge_past_the_bound_deletes_the_look_ups_it_left_out(
    engine: AsyncEngine, store_id: str, one_batch: bool
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    await _at_the_bound(processor, store_id)
    guest: dict[str, Any] = {"email": "gil@x.io", "anonymous_id": "b-1"}
    later = T0 + timedelta(days=1)
    steps = [
        [order(store_id, guest, "o1", later)],  # a guest: profile email:gil@x.io, found by its browser too
        # The account says it has the guest's email: one customer, with no room for the guest's look-ups.
        [
            event(
                store_id,
                "customer_upserted",
                None,
                later + timedelta(hours=1),
                store_customer_id="u-1",
                email="gil@x.io",
            )
        ],
        # The guest's browser, after the merge: someone new.
        [event(store_id, "product_viewed", VIEW, later + timedelta(hours=2), anonymous_id="b-1")],
    ]
    if one_batch:
        await processor([e for step in steps for e in step])
    else:
        for step in steps:
            await processor(step)
    look_ups = await _look_ups(engine, store_id)
    assert "email:gil@x.io" not in look_ups
    assert look_ups["anon:b-1"] == "anon:b-1"
    assert look_ups["order:o1"] == "u-1"
    assert sorted(i for i, c in look_ups.items() if c == "u-1") == await _listed(engine, store_id, "u-1")
    async with engine.connect() as conn:
        merged = await conn.scalar(
            select(profiles.c.merged_into).where(
                profiles.c.store_id == store_id, profiles.c.customer_id == "email:gil@x.io"
            )
        )
    assert merged == "u-1"

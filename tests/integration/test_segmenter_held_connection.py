"""The consumer's handler keeps its connection from one batch to the next (FunnelProcessor's
`hold_connection`) instead of a pinged checkout per batch; a kept connection found dead when the next batch
comes is replaced at once, as the pool's ping would have replaced it, and the batch still commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.entrypoints.processor import FunnelProcessor
from tests.integration.test_segmenter_engine import order, registry
from tests.integration.test_segmenter_profile_cache import stored

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def checked_out(engine: AsyncEngine) -> int:
    return int(engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_batches_share_one_connection_until_closed(engine: AsyncEngine, store_id: str) -> None:
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True)
    before = checked_out(engine)
    who = {"store_customer_id": "c1", "email": "c1@x.io"}
    await processor([order(store_id, who, "o1", T0)])
    assert checked_out(engine) == before + 1
    await processor([order(store_id, who, "o2", T0 + timedelta(days=1))])
    assert checked_out(engine) == before + 1
    await processor.close()
    assert checked_out(engine) == before
    assert [o.order_id for o in (await stored(engine, store_id, "c1")).orders] == ["o1", "o2"]


async def test_a_kept_connection_that_died_between_batches_is_replaced_and_the_batch_commits(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True)
    who = {"store_customer_id": "c1", "email": "c1@x.io"}
    await processor([order(store_id, who, "o1", T0)])
    # Every other idle session of this database ends, the kept connection's among them (as after a server
    # restart); the pool's other connections are pinged, and replaced, at their next checkout.
    async with engine.connect() as conn:
        ended = (
            await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                )
            )
        ).scalar_one()
    assert ended >= 1
    await processor([order(store_id, who, "o2", T0 + timedelta(days=1))])
    await processor.close()
    after = await stored(engine, store_id, "c1")
    assert [o.order_id for o in after.orders] == ["o1", "o2"]
    assert after.stage == "repeat"

"""The consumer's handler and the outbox relay keep their connection from one transaction to the next
(`hold_connection`, shared/kept_connection.py) instead of a pool checkout each; a kept connection found
dead at its next use is replaced at once, as the pool's checks would have, and the work commits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.kafka import ensure_topics
from shared.outbox import OutboxRelay
from shared.settings import KafkaSettings
from tests.integration.test_segmenter_engine import order, registry
from tests.integration.test_segmenter_outbox_relay import relay_producer, relay_table
from tests.integration.test_segmenter_profile_cache import stored
from tests.kafka_helpers import end_offsets

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


__all__ = ["relay_producer", "relay_table"]  # fixtures


async def end_idle_sessions(engine: AsyncEngine) -> None:
    """Every other idle session of this database ends, kept connections among them (as after a server
    restart); the pool's other connections are found closed, and replaced, at their next checkout."""
    async with engine.connect() as conn:
        ended = list(
            (
                await conn.execute(
                    text(
                        # Materialised: the idle sessions are chosen first, then each one is ended.
                        "WITH idle AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle') "
                        "SELECT pid FROM idle WHERE pg_terminate_backend(pid)"
                    )
                )
            ).scalars()
        )
        assert ended
        # Until the server has closed them, then a moment for asyncpg to read that they are closed (as it
        # has long read it when a restart happens between two batches).
        for _ in range(100):
            left = await conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:ended)"), {"ended": ended}
            )
            if not left.scalar_one():
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)


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
    await end_idle_sessions(engine)
    await processor([order(store_id, who, "o2", T0 + timedelta(days=1))])
    await processor.close()
    after = await stored(engine, store_id, "c1")
    assert [o.order_id for o in after.orders] == ["o1", "o2"]
    assert after.stage == "repeat"


async def test_the_relay_keeps_its_connection_and_replaces_one_that_died(
    engine: AsyncEngine, relay_table: Table, relay_producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    topic = f"relay-kept-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
    relay = OutboxRelay(
        name="test",
        engine=engine,
        table=relay_table,
        producer=lambda: relay_producer,
        lock_key=0x7E57_0002,
        hold_connection=True,
    )
    before = checked_out(engine)
    for round_ in range(2):
        rows = [{"topic": topic, "key": b"k%d" % n, "value": b"%d:%d" % (round_, n)} for n in range(5)]
        async with engine.begin() as conn:
            await conn.execute(insert(relay_table), rows)
        assert await relay.publish_batch() == len(rows)
        assert checked_out(engine) == before + 1
        await end_idle_sessions(engine)
    await relay.close()
    assert checked_out(engine) == before
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(relay_table))).scalar() == 0
    assert await end_offsets(kafka_bootstrap, topic) == 10

"""How far the consumer has read its partitions, kept in PostgreSQL (tables.consumer_progress) so that every
instance's timers wait for every instance's consumer (shared/consumer_progress.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from aiokafka import TopicPartition
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.tables import consumer_progress


async def record(conn: AsyncConnection, read_before: Mapping[TopicPartition, datetime]) -> None:
    """Each partition's bound, kept when it moves forward only: a member that holds a partition again after
    a rebalance may know less of it than its member before did."""
    if not read_before:
        return
    # In one order, so that two members writing a partition a rebalance moved between them lock alike.
    rows = [
        {"topic": tp.topic, "partition": tp.partition, "read_before": at}
        for tp, at in sorted(read_before.items(), key=lambda item: (item[0].topic, item[0].partition))
    ]
    statement = insert(consumer_progress).values(rows)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[consumer_progress.c.topic, consumer_progress.c.partition],
            set_={
                "read_before": func.greatest(consumer_progress.c.read_before, statement.excluded.read_before)
            },
        )
    )


async def least(conn: AsyncConnection, topic: str) -> datetime | None:
    """The least bound of the topic's partitions: every record sent to the topic before it has been handled
    (None before any member recorded one)."""
    least: datetime | None = (
        await conn.execute(
            select(func.min(consumer_progress.c.read_before)).where(consumer_progress.c.topic == topic)
        )
    ).scalar()
    return least

"""The outbox relay: rows written in the same transaction as a state change are published to Kafka after
the commit, then deleted. A crash between publish and delete publishes a row twice, never zero times; the
consumers downstream dedupe by event id.

Only one relay publishes at a time (a transaction-scoped advisory lock), so rows leave in id order and one
customer's funnel events keep their order however many instances run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.kept_connection import KeptConnection
from shared.logging import get_logger
from shared.partitioning import default_partition
from shared.raw_sql import execute, fetch
from shared.workers import Poller

log = get_logger(__name__)

RELAYED = Counter("outbox_relayed_total", "Outbox rows published to Kafka", ["outbox"])


class OutboxRelay(Poller):
    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        table: Table,
        producer: Callable[[], AIOKafkaProducer | None],
        lock_key: int,
        batch_size: int = 1000,
        idle_poll_seconds: float = 0.5,
        hold_connection: bool = False,
    ) -> None:
        super().__init__(f"outbox-{name}", batch_size, idle_poll_seconds)
        self._name = name
        self._table = table
        self._producer = producer
        self._lock_key = lock_key
        # With `hold_connection`, one connection kept from round to round (shared/kept_connection.py): at
        # steady load the relay runs after every batch the consumer commits, and a pool checkout per
        # round is bookkeeping it need not repeat (three round trips while checkouts were pinged). `close`
        # gives it back.
        self._connections = KeptConnection(engine, keep=hold_connection)
        # After the lock (which begins the transaction on SQLAlchemy, so a kept connection found dead there
        # is replaced at once), the round's read and delete go straight to asyncpg (shared/raw_sql.py):
        # SQLAlchemy's execute, its rows and the array literal were a third of the relay's time at
        # saturation. The delete takes one array parameter, so the text is the same whatever the round's
        # size and is prepared once per connection.
        self._select_sql = f"SELECT id, topic, key, value FROM {table.fullname} ORDER BY id LIMIT $1"  # noqa: S608
        self._delete_sql = f"DELETE FROM {table.fullname} WHERE id = ANY($1::bigint[])"  # noqa: S608
        # Built once: at steady load a round follows every committed batch, and building the expression
        # (the function call, the select) each round was a fifth of the round's SQLAlchemy work.
        self._lock = select(func.pg_try_advisory_xact_lock(lock_key))
        # Each key's partition, kept from round to round while its topic's partitions stay the same: a
        # customer's funnel events come over many rounds, and murmur2 in Python was a third of the
        # relay's samples at 1,000 events/s.
        self._partitions = _Partitions()

    async def close(self) -> None:
        await self._connections.close()

    async def step(self) -> int:
        return await self.publish_batch()

    async def publish_batch(self) -> int:
        producer = self._producer()
        if producer is None:
            return 0
        published = await self._connections.transaction(lambda conn: self._publish(conn, producer))
        if published:
            RELAYED.labels(self._name).inc(published)
        return published

    async def _publish(self, conn: AsyncConnection, producer: AIOKafkaProducer) -> int:
        locked = (await conn.execute(self._lock)).scalar()
        if not locked:
            return 0
        rows = await fetch(conn, self._select_sql, self._batch_size)
        if not rows:
            return 0
        await asyncio.gather(*await _send_in_batches(producer, rows, self._partitions))
        await execute(conn, self._delete_sql, [row[0] for row in rows])
        return len(rows)


# Keys remembered per topic before the memo starts over (about 150 bytes each with the dict's entry).
_KEYS_REMEMBERED = 20_000


class _Partitions:
    """Each key's partition in its topic as the producer's default partitioner picks it, remembered while the
    topic's partitions are the ones it was worked out for (a topic given more partitions starts over)."""

    def __init__(self) -> None:
        self._topics: dict[str, tuple[list[int], dict[bytes, int]]] = {}

    async def of(self, producer: AIOKafkaProducer, topic: str) -> tuple[list[int], dict[bytes, int]]:
        """The topic's partitions (sorted, as the producer passes them to its partitioner) and the memo of
        its keys' partitions among them."""
        in_topic = sorted(await producer.partitions_for(topic))
        known = self._topics.get(topic)
        if known is None or known[0] != in_topic or len(known[1]) >= _KEYS_REMEMBERED:
            known = self._topics[topic] = (in_topic, {})
        return known


async def _send_in_batches(
    producer: AIOKafkaProducer, rows: Sequence[Any], memo: _Partitions
) -> list[asyncio.Future[Any]]:
    """Hand the rows (id, topic, key, value; id order) to the producer as one record batch per partition
    (more when one fills); return the batches' delivery futures.

    `producer.send` per row costs a future, a size estimate and a partitioner call each: with a thousand
    rows a round that was a tenth of the segmenter's time. Each row goes to the partition `send` would have
    chosen (the producer's default partitioner over the topic's partitions, sorted as the producer passes
    them: Kafka's murmur2, computed by shared/partitioning.py in 1.9 us a key where aiokafka's partitioner
    took 3.8, and remembered in `memo`), and a partition's rows keep their order, so one customer's events
    still arrive in order.
    """
    topics: dict[str, tuple[list[int], dict[bytes, int]]] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for _, topic, key, value in rows:
        known = topics.get(topic)
        if known is None:
            known = topics[topic] = await memo.of(producer, topic)
        in_topic, partition_of = known
        partition = partition_of.get(key)
        if partition is None:
            partition = partition_of[key] = in_topic[default_partition(key, len(in_topic))]
        batch = open_batches.get((topic, partition))
        if batch is None:
            batch = open_batches[(topic, partition)] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            # Full: send it and start the partition's next one (a fresh batch takes any one record).
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[(topic, partition)] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for (topic, partition), batch in open_batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures

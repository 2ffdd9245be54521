"""Work due by the wall clock waits for the consumer: it is taken only once every event sent before it came
due has been handled.

The segmenter's timers and the notifier's sender decide from what their consumer has read: a cart's timer
whether an order closed the cart, a message's guards whether the customer ordered since its trigger. After
an outage of the database or of the service itself, the wall clock has moved on while the events sent
meanwhile wait in Kafka; work taken then decided without them, and a buyer whose order was queued was told
their cart was abandoned. So each round first records how far this member's consumer has read its
partitions (shared/consumer_progress.py), in a table of the service's schema every member shares. While
every partition is read to within LATE_RECORDS of the wall clock (the consumers keep up), due work is taken
by the clock, as without this; when the least bound falls further behind (a backlog), only what came due
before it, less LATE_RECORDS, and the work waits as long as its events do. A partition no member has
recorded yet (the first start on a backlog, a member's partitions before their first batch, partitions
just added to the topic) may hold anything: once the consumer knows the topic's partitions (its cluster
metadata), nothing is taken until every one of them has a bound, which a running consumer gives each within
a second of reading it to its end. Before that (the consumer not in its group yet, or the broker unreachable
since the process started) the table alone says: the least bound recorded, and nothing held back when there
is none, so that a notifier started without a broker still sends what it has planned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition
from prometheus_client import Gauge
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

WAITING = Gauge(
    "consumer_wait_seconds",
    "How far behind the wall clock a worker's last round took its due work, waiting for the consumers to "
    "read what was sent before it came due (0 while they keep up; +Inf while a partition has no bound yet)",
    ["worker"],
)

# Records reach the broker a little after the time they were stamped with (ingest's producer lingers and
# waits for the broker's acknowledgement; the outbox relays publish what was committed a moment before), and
# hosts' clocks differ by a little: a partition read up to a time may still get a record stamped a moment
# before it. A consumer this close to the clock keeps up; one further behind is waited for, with this margin.
LATE_RECORDS = timedelta(seconds=5)

# What `until` answers while a partition has no bound: nothing is due before it (no timer or message is).
HELD = datetime(1970, 1, 1, tzinfo=UTC)


def consumer_progress_table(metadata: MetaData) -> Table:
    """How far the consumers have read each partition of their topic, in its records' time: every record
    sent to the partition before `read_before` has been handled."""
    return Table(
        "consumer_progress",
        metadata,
        Column("topic", String(249), primary_key=True),  # Kafka's longest topic name
        Column("partition", Integer, primary_key=True),
        Column("read_before", DateTime(timezone=True), nullable=False),
    )


async def record(conn: AsyncConnection, table: Table, read_before: Mapping[TopicPartition, datetime]) -> None:
    """Each partition's bound, kept when it moves forward only: a member that holds a partition again after
    a rebalance may know less of it than its member before did."""
    if not read_before:
        return
    # In one order, so that two members writing a partition a rebalance moved between them lock alike.
    rows = [
        {"topic": tp.topic, "partition": tp.partition, "read_before": at}
        for tp, at in sorted(read_before.items(), key=lambda item: (item[0].topic, item[0].partition))
    ]
    statement = insert(table).values(rows)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.topic, table.c.partition],
            set_={"read_before": func.greatest(table.c.read_before, statement.excluded.read_before)},
        )
    )


async def least(
    conn: AsyncConnection, table: Table, topic: str, partitions: int | None
) -> tuple[int, datetime | None]:
    """How many of the topic's partitions have a bound, and the least of them: every record sent to those
    partitions before it has been handled. Rows of partitions beyond `partitions` (when known), left by a
    topic made again with fewer, are not the topic's."""
    query = select(func.count(), func.min(table.c.read_before)).where(table.c.topic == topic)
    if partitions is not None:
        query = query.where(table.c.partition < partitions)
    counted, found = (await conn.execute(query)).one()
    return int(counted), found


@dataclass
class ConsumerWait:
    """One worker's wait for the consumers of `topic`; `read_before` gives this member's bounds and
    `partitions` how many partitions the topic has (its ConsumerPipeline's read_before and partition_count;
    None while the consumer has no metadata)."""

    worker: str
    table: Table
    topic: str
    read_before: Callable[[], Mapping[TopicPartition, datetime]]
    partitions: Callable[[], int | None]
    # False for a second worker of the same process that only reads what the first records: each round's
    # transaction holds the rows it wrote until it commits, and the two would wait on each other.
    records: bool = True
    _recorded: dict[TopicPartition, datetime] = field(default_factory=dict, init=False)

    async def until(
        self, conn: AsyncConnection, now: datetime
    ) -> tuple[Mapping[TopicPartition, datetime], datetime]:
        """In the round's transaction: record this member's bounds that moved since the last round, and say
        until when due work may be taken. The bounds recorded are returned for `committed`."""
        moved = {}
        if self.records:
            moved = {tp: at for tp, at in self.read_before().items() if self._recorded.get(tp) != at}
            await record(conn, self.table, moved)
        partitions = self.partitions()
        recorded, bound = await least(conn, self.table, self.topic, partitions)
        if partitions is not None and recorded < partitions:
            WAITING.labels(self.worker).set(float("inf"))
            return moved, HELD
        until = now if bound is None or bound >= now - LATE_RECORDS else bound - LATE_RECORDS
        WAITING.labels(self.worker).set((now - until).total_seconds())
        return moved, until

    def committed(self, recorded: Mapping[TopicPartition, datetime]) -> None:
        """The round's transaction committed: what it recorded is the table's."""
        self._recorded.update(recorded)

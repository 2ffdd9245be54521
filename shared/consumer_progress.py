"""How far a consumer has read each of its partitions, in the time its records were sent: for each, a time
before which every record sent to it has been handled (its batch's transaction committed).

Work that comes due by the wall clock and depends on what the consumer will read (the segmenter's timers:
a cart counts as abandoned an hour after its last activity unless an order came) must not run ahead of the
consumer. After an outage of the database or of the consumer's own process, the wall clock has moved on
while the records sent meanwhile wait in Kafka; a timer fired then decides without the order that is
queued, and the buyer is told their cart was abandoned.

The time of a record is its Kafka timestamp: the producer's clock when it appended the record (ingest sends
every record without one of its own, so it is when ingest accepted the event). A partition's bound moves
forward two ways:
- a batch handled: the timestamp of its last record on the partition;
- the partition caught up (the consumer has handled everything up to the highwater offset its last fetch
  of the partition saw): the time of that fetch. This is what moves an idle partition's bound, and it
  stops when Kafka is unreachable, since no fetch answers then.
Records reach the broker a little after their timestamp and hosts' clocks differ a little, so a reader of
these bounds leaves a margin (the segmenter's timers: services/segmenter/entrypoints/timers.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

# At most how often a consumer's loop asks whether its partitions are caught up (each asks every partition).
CAUGHT_UP_CHECK_SECONDS = 0.5

# How long that check waits for a partition's position: none when it is known (the usual case); a partition
# being reset (after a rebalance) has none for a while, and is simply checked again next time.
_POSITION_WAIT_SECONDS = 0.05


class TimedRecord(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch (-1 when the record has none)."""


class Watermarks(Protocol):
    """What the check needs of a consumer (aiokafka's AIOKafkaConsumer)."""

    def assignment(self) -> set[TopicPartition]: ...
    async def position(self, partition: TopicPartition) -> int: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def last_poll_timestamp(self, partition: TopicPartition) -> int | None: ...


class ReadProgress:
    """The bounds of one consumer's partitions, in milliseconds since the epoch; they only move forward."""

    def __init__(self) -> None:
        self._before: dict[TopicPartition, int] = {}
        self._checked = 0.0  # time.monotonic() of the last caught-up check

    def handled(self, batches: Mapping[TopicPartition, Sequence[TimedRecord]]) -> None:
        """A batch's transaction committed: its records are handled."""
        for tp, records in batches.items():
            if records:
                self._advance(tp, records[-1].timestamp)

    async def caught_up(self, consumer: Watermarks, pending: Collection[TopicPartition] = ()) -> None:
        """Called when every record the consumer returned has been handled, but those of the partitions in
        `pending` (a batch in hand, read ahead in a backlog): each other partition whose position has reached
        the highwater its last fetch saw is read up to that fetch. At most every CAUGHT_UP_CHECK_SECONDS."""
        now = time.monotonic()
        if now - self._checked < CAUGHT_UP_CHECK_SECONDS:
            return
        self._checked = now
        for tp in consumer.assignment():
            if tp in pending:
                # Its position counts the batch's records, which are not handled yet.
                continue
            try:
                highwater, fetched_at = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
                if highwater is None or fetched_at is None:
                    continue  # not fetched yet
                position = await asyncio.wait_for(consumer.position(tp), _POSITION_WAIT_SECONDS)
            except (TimeoutError, IllegalStateError, AssertionError):
                # No position yet, or the partition was revoked meanwhile (aiokafka asserts it is assigned).
                continue
            if position >= highwater:
                self._advance(tp, fetched_at)

    def read_before(self, assigned: set[TopicPartition]) -> dict[TopicPartition, datetime]:
        """The bound of each partition in `assigned` that has one (those the consumer holds now: another
        member tells the others')."""
        return {
            tp: datetime.fromtimestamp(ms / 1000, UTC) for tp, ms in self._before.items() if tp in assigned
        }

    def _advance(self, tp: TopicPartition, ms: int) -> None:
        if ms >= 0 and ms > self._before.get(tp, -1):
            self._before[tp] = ms

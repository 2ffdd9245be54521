"""An in-memory Kafka for unit tests of the consumer pipeline: partitions as lists, a group's committed
offsets, and a producer that records what it was asked to send. Every call lands in one shared journal, so a
test can assert the order of handle, dead-letter and commit without a broker (tests/integration covers the
same rules against a real one)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = -1  # milliseconds since the epoch; -1: none, as a record of Kafka's oldest format


@dataclass
class Journal:
    """What happened, in order: ("handle", n) / ("dlq", offset) / ("commit", {tp: offset})."""

    entries: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class FakeConsumer:
    """One member of a group that holds every partition of `logs`; getmany hands out up to max_records."""

    logs: dict[TopicPartition, list[FakeRecord]]
    journal: Journal
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    started: bool = False
    # When the last fetch answered, in milliseconds since the epoch: each partition is always fetched to its
    # end, so its highwater is its log's length (None: never fetched, so never known to be caught up).
    fetched_at_ms: int | None = None

    @classmethod
    def of(cls, journal: Journal, values: Mapping[tuple[str, int], Sequence[bytes | None]]) -> FakeConsumer:
        logs = {
            TopicPartition(topic, partition): [
                FakeRecord(topic, partition, offset, b"k", value) for offset, value in enumerate(batch)
            ]
            for (topic, partition), batch in values.items()
        }
        return cls(logs, journal)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        out: dict[TopicPartition, list[FakeRecord]] = {}
        budget = max_records if max_records is not None else 1 << 30
        for tp in sorted(partitions or self.logs, key=lambda t: (t.topic, t.partition)):
            start = self.positions.get(tp, self.committed.get(tp, 0))
            taken = self.logs[tp][start : start + budget]
            if taken:
                out[tp] = taken
                self.positions[tp] = start + len(taken)
                budget -= len(taken)
        if not out:
            await asyncio.sleep(0)
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        # As aiokafka does, before it sends anything: a partition not held (a rebalance took it) is refused.
        if not self.logs:
            raise IllegalStateError("No partitions assigned")
        for tp in offsets:
            if tp not in self.logs:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        self.journal.entries.append(("commit", dict(offsets)))
        self.committed.update(offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    async def position(self, partition: TopicPartition) -> int:
        return self.positions.get(partition, self.committed.get(partition, 0))

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.logs[partition]) if self.fetched_at_ms is not None else None

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        return self.fetched_at_ms

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {tp.partition for tp in self.logs if tp.topic == topic} or None

    def batch(self) -> dict[TopicPartition, list[FakeRecord]]:
        """Everything not yet committed, as one getmany would return it."""
        return {
            tp: records[self.committed.get(tp, 0) :]
            for tp, records in self.logs.items()
            if records[self.committed.get(tp, 0) :]
        }


@dataclass(frozen=True)
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: dict[str, bytes]


@dataclass
class FakeProducer:
    """Acknowledges every send at once, unless `fail_next` says how many sends to refuse first."""

    journal: Journal
    sent: list[Sent] = field(default_factory=list)
    fail_next: int = 0

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker unreachable (fake)")
        record = Sent(topic, value, key, dict(headers or []))
        self.sent.append(record)
        self.journal.entries.append(("dlq", int(record.headers["dlq.original.offset"])))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

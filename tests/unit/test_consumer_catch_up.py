"""The catch-up poll (shared/consumer.py, `catch_up_ms`): a batch taken from records the consumer had
buffered while the previous batch was handled also takes what reached the broker meanwhile, in offset order,
and nothing waits for it when the poll's records were fresh or the batch is full.

The fake below buffers as aiokafka's fetcher does: a partition is fetched again only once its buffered
records were all taken, and a fetch sent then is answered by the first records to reach the broker (or at
once when some are there already)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from shared.consumer import ConsumerPipeline
from tests.kafka_fakes import FakeProducer, FakeRecord, Journal

TP = TopicPartition("storefront-events", 0)
CATCH_UP_MS = 10
HANDLING_S = 0.03  # longer than CATCH_UP_MS: what was buffered meanwhile is stale


@dataclass
class BufferingConsumer:
    """One partition: the broker's log, what the consumer buffered of it, and whether a fetch is waiting."""

    journal: Journal
    log: list[FakeRecord] = field(default_factory=list)
    buffered: list[FakeRecord] = field(default_factory=list)
    fetched: int = 0  # offsets below it were fetched (buffered or taken)
    fetch_waiting: bool = True  # the first fetch is sent at start
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    timeouts: list[int] = field(default_factory=list)

    def produce(self, *values: bytes) -> None:
        """Records reaching the broker together (one answer to a waiting fetch carries them all)."""
        for value in values:
            self.log.append(FakeRecord(TP.topic, TP.partition, len(self.log), b"k", value))
        if self.fetch_waiting:
            self._fetch()

    def _fetch(self) -> None:
        self.buffered += self.log[self.fetched :]
        self.fetched = len(self.log)
        self.fetch_waiting = False
        self.arrived.set()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        self.timeouts.append(timeout_ms)
        if not self.buffered:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout_ms / 1000)
            except TimeoutError:
                return {}
        limit = max_records if max_records is not None else len(self.buffered)
        taken, self.buffered = self.buffered[:limit], self.buffered[limit:]
        if not self.buffered:
            # All taken: the next fetch goes out, answered at once when the broker has records already.
            self.fetch_waiting = True
            if self.fetched < len(self.log):
                asyncio.get_running_loop().call_soon(self._fetch)
        return {TP: taken}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.journal.entries.append(("commit", dict(offsets)))
        self.committed.update(offsets)

    async def position(self, partition: TopicPartition) -> int:
        return self.fetched - len(self.buffered)

    def highwater(self, partition: TopicPartition) -> int | None:
        return None  # catching up is not what these tests are about

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {TP.partition}

    def assignment(self) -> set[TopicPartition]:
        return {TP}


async def consume(
    consumer: BufferingConsumer,
    *,
    catch_up_ms: int,
    max_records: int = 100,
    during: dict[int, list[bytes | tuple[bytes, ...]]] | None = None,
    total: int,
) -> list[list[bytes]]:
    """Handle until `total` records are committed; `during[n]`: what reaches the broker while the n-th batch
    (from 0) is handled, after its fetch was answered: each item one record (or several together)."""
    batches: list[list[bytes]] = []
    consuming: ConsumerPipeline[bytes]

    async def handle(values: Sequence[bytes]) -> None:
        batches.append(list(values))
        await asyncio.sleep(0)  # the fetch sent when the batch was taken is answered
        for item in (during or {}).get(len(batches) - 1, []):
            consumer.produce(*(item if isinstance(item, tuple) else (item,)))
        await asyncio.sleep(HANDLING_S)

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        await BufferingConsumer.commit(consumer, offsets)
        if offsets[TP] >= total:
            consuming.stop_after_batch()

    consumer.commit = commit  # type: ignore[method-assign]
    consuming = ConsumerPipeline(
        name="unit",
        consumer_factory=lambda: consumer,
        dlq_producer=lambda: FakeProducer(consumer.journal),
        decode=bytes,
        handle=handle,
        max_records=max_records,
        catch_up_ms=catch_up_ms,
    )
    await asyncio.wait_for(consuming.run_forever(), 5)
    return batches


async def test_a_stale_buffer_is_topped_up_with_what_reached_the_broker_meanwhile() -> None:
    # While batch 0 is handled, b1 answers the waiting fetch (buffered) and b2 stays on the broker.
    consumer = BufferingConsumer(Journal())
    consumer.produce(b"a0")
    batches = await consume(consumer, catch_up_ms=CATCH_UP_MS, during={0: [b"b1", b"b2"]}, total=3)
    assert batches == [[b"a0"], [b"b1", b"b2"]]
    assert consumer.committed == {TP: 3}


async def test_without_catch_up_what_reached_the_broker_waits_for_another_batch() -> None:
    consumer = BufferingConsumer(Journal())
    consumer.produce(b"a0")
    batches = await consume(consumer, catch_up_ms=0, during={0: [b"b1", b"b2"]}, total=3)
    assert batches == [[b"a0"], [b"b1"], [b"b2"]]


async def test_a_poll_that_waited_for_its_records_is_not_topped_up() -> None:
    # Nothing arrives during batch 0: the next poll waits for c1, fresh from its fetch, and goes on with it.
    consumer = BufferingConsumer(Journal())
    consumer.produce(b"a0")

    async def later() -> None:
        await asyncio.sleep(HANDLING_S + 0.02)
        consumer.produce(b"c1")

    task = asyncio.create_task(later())
    batches = await consume(consumer, catch_up_ms=CATCH_UP_MS, total=2)
    await task
    assert batches == [[b"a0"], [b"c1"]]
    assert CATCH_UP_MS not in consumer.timeouts


async def test_a_full_batch_is_not_topped_up_and_the_rest_keeps_its_order() -> None:
    consumer = BufferingConsumer(Journal())
    consumer.produce(b"a0")
    # b1-b3 answer batch 0's fetch together; d4 reaches the broker while batch 1 is handled.
    during: dict[int, list[bytes | tuple[bytes, ...]]] = {0: [(b"b1", b"b2", b"b3")], 1: [b"d4"]}
    batches = await consume(consumer, catch_up_ms=CATCH_UP_MS, max_records=2, during=during, total=5)
    assert batches == [[b"a0"], [b"b1", b"b2"], [b"b3", b"d4"]]
    assert consumer.timeouts.count(CATCH_UP_MS) == 1  # batch 2's top-up only: batch 1 was full
    assert consumer.committed == {TP: 5}

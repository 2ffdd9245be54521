"""ingest's own record batches (services/ingest/record_batches.py), against a producer that behaves as
aiokafka's batch API does: `send_batch` waits while the partition still has a batch the producer has not
taken, and a batch's future resolves when the broker acknowledges it. Real aiokafka BatchBuilders hold the
records, read back as the broker would read them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from services.ingest.record_batches import MAX_WAITING_BATCHES, PartitionBatches, acknowledged

TOPIC = "storefront-events"


class FakeProducer:
    """aiokafka's batch API with the broker in the test's hands: `take()` is the sender taking the
    partition's batch (it sends one at a time), `acknowledge()` / `fail()` the broker's answer."""

    def __init__(self, batch_size: int = 256 * 1024) -> None:
        self.batch_size = batch_size
        self.handed: list[tuple[int, BatchBuilder, asyncio.Future[Any]]] = []
        self._untaken: dict[int, asyncio.Event] = {}
        self.refuse_next: Exception | None = None

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert topic == TOPIC
        while partition in self._untaken:
            await self._untaken[partition].wait()
        if self.refuse_next is not None:
            refusal, self.refuse_next = self.refuse_next, None
            raise refusal
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.handed.append((partition, batch, acked))
        self._untaken[partition] = asyncio.Event()
        return acked

    def take(self, partition: int) -> None:
        taken = [batch for p, batch, _ in self.handed if p == partition][-1]
        assert taken.closed(), "nothing may join a batch once the sender can take it"
        self._untaken.pop(partition).set()

    def acknowledge(self, index: int) -> None:
        self.handed[index][2].set_result(object())

    def fail(self, index: int, error: Exception) -> None:
        self.handed[index][2].set_exception(error)

    def records(self, index: int) -> list[tuple[bytes | None, bytes | None]]:
        built = DefaultRecordBatch(bytes(self.handed[index][1]._build()))
        return [(record.key, record.value) for record in built]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def batches(producer: FakeProducer) -> PartitionBatches:
    return PartitionBatches(producer, TOPIC)


async def test_a_request_is_answered_only_once_its_batch_is_acknowledged() -> None:
    producer = FakeProducer()
    records = batches(producer)
    deliveries = [records.append(0, b"k", b"v1"), records.append(0, b"k", b"v2")]
    waiting = asyncio.ensure_future(acknowledged(deliveries))
    await settle()
    assert len(producer.handed) == 1
    assert producer.records(0) == [(b"k", b"v1"), (b"k", b"v2")]
    assert not waiting.done()
    producer.acknowledge(0)
    await asyncio.wait_for(waiting, 1)


async def test_records_arriving_while_a_batch_waits_share_the_next_batch_in_order() -> None:
    producer = FakeProducer()
    records = batches(producer)
    first = records.append(3, b"a", b"1")
    await settle()  # batch 0 handed over, not yet taken by the sender
    second = [records.append(3, b"a", b"2"), records.append(3, b"b", b"3")]
    await settle()  # batch 1 waits for batch 0 to be taken
    third = records.append(3, b"a", b"4")
    assert second[0] is second[1]
    assert len(producer.handed) == 1
    producer.take(3)
    await settle()
    assert len(producer.handed) == 2
    assert producer.records(1) == [(b"a", b"2"), (b"b", b"3"), (b"a", b"4")]
    assert third is second[0]
    producer.acknowledge(1)
    await asyncio.wait_for(acknowledged([second[0]]), 1)
    assert not first.done()
    producer.acknowledge(0)
    await asyncio.wait_for(acknowledged([first]), 1)


async def test_partitions_are_batched_apart() -> None:
    producer = FakeProducer()
    records = batches(producer)
    one, two = records.append(1, b"x", b"1"), records.append(2, b"y", b"2")
    await settle()
    assert sorted(partition for partition, _, _ in producer.handed) == [1, 2]
    producer.acknowledge(0)
    producer.acknowledge(1)
    await asyncio.wait_for(acknowledged({one, two}), 1)


async def test_a_full_batch_is_followed_by_the_next_one_in_order() -> None:
    producer = FakeProducer(batch_size=200)
    records = batches(producer)
    values = [bytes([65 + i]) * 60 for i in range(8)]
    deliveries = [records.append(0, b"k", value) for value in values]
    assert len(set(deliveries)) > 1
    sent: list[bytes | None] = []
    for index in range(len(set(deliveries))):
        await settle()
        sent += [value for _, value in producer.records(index)]
        producer.acknowledge(index)
        producer.take(0)
    assert sent == values
    await asyncio.wait_for(acknowledged(set(deliveries)), 1)


async def test_a_failed_batch_fails_its_requests_and_the_next_batch_still_goes() -> None:
    producer = FakeProducer()
    records = batches(producer)
    failing = records.append(0, b"k", b"1")
    await settle()
    following = records.append(0, b"k", b"2")
    producer.fail(0, KafkaTimeoutError())
    producer.take(0)
    await settle()
    with pytest.raises(KafkaTimeoutError):
        await acknowledged([failing])
    producer.acknowledge(1)
    await asyncio.wait_for(acknowledged([following]), 1)


async def test_a_batch_the_producer_refuses_fails_its_requests_only() -> None:
    producer = FakeProducer()
    producer.refuse_next = KafkaTimeoutError()
    records = batches(producer)
    refused = records.append(0, b"k", b"1")
    await settle()
    with pytest.raises(KafkaTimeoutError):
        await acknowledged([refused])
    later = records.append(0, b"k", b"2")
    await settle()
    producer.acknowledge(0)
    await asyncio.wait_for(acknowledged([later]), 1)


async def test_a_request_giving_up_leaves_the_shared_acknowledgement_to_the_others() -> None:
    producer = FakeProducer()
    records = batches(producer)
    shared = records.append(0, b"k", b"1")
    assert records.append(0, b"k", b"2") is shared
    impatient = asyncio.ensure_future(acknowledged([shared]))
    patient = asyncio.ensure_future(acknowledged([shared]))
    await settle()
    impatient.cancel()
    await settle()
    assert not shared.cancelled()
    producer.acknowledge(0)
    await asyncio.wait_for(patient, 1)


async def test_behind_once_a_partition_has_too_many_batches_waiting() -> None:
    producer = FakeProducer(batch_size=100)
    records = batches(producer)
    for _ in range(MAX_WAITING_BATCHES + 2):
        records.append(4, b"k", b"v" * 90)  # one record fills a batch
    assert records.behind({4})
    assert not records.behind({5})


async def test_close_waits_until_every_batch_is_handed_over() -> None:
    producer = FakeProducer()
    records = batches(producer)
    records.append(0, b"k", b"1")
    await settle()
    records.append(0, b"k", b"2")
    closing = asyncio.ensure_future(records.close())
    await settle()
    assert not closing.done()
    producer.take(0)
    await asyncio.wait_for(closing, 1)
    assert len(producer.handed) == 2


async def test_close_gives_up_after_its_time_and_fails_what_was_left() -> None:
    producer = FakeProducer()
    records = batches(producer)
    records.append(0, b"k", b"1")
    await settle()
    left = records.append(0, b"k", b"2")  # waits for a sender that never takes the first batch
    await asyncio.wait_for(records.close(within_seconds=0.05), 1)
    with pytest.raises(ProducerClosed):
        await acknowledged([left])


async def test_a_partition_idle_between_requests_keeps_its_flusher_and_close_ends_it() -> None:
    producer = FakeProducer()
    records = batches(producer)
    first = records.append(2, b"k", b"1")
    await settle()
    producer.take(2)
    producer.acknowledge(0)
    await asyncio.wait_for(acknowledged([first]), 1)
    await settle()  # every batch handed over: the flusher waits for the next one
    flusher = records._flushers[2]
    second = records.append(2, b"k", b"2")
    await settle()
    assert records._flushers[2] is flusher
    assert producer.records(1) == [(b"k", b"2")]
    producer.take(2)
    producer.acknowledge(1)
    await asyncio.wait_for(acknowledged([second]), 1)
    await asyncio.wait_for(records.close(), 1)
    assert flusher.done()
    assert not flusher.cancelled()
    assert not records._flushers


async def test_a_request_waiting_for_several_batches_fails_with_the_one_that_failed() -> None:
    producer = FakeProducer()
    records = batches(producer)
    one, two = records.append(0, b"k", b"1"), records.append(1, b"k", b"2")
    waiting = asyncio.ensure_future(acknowledged({one, two}))
    await settle()
    producer.acknowledge(0)
    await settle()
    assert not waiting.done()
    producer.fail(1, KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await asyncio.wait_for(waiting, 1)

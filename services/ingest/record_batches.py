"""Kafka record batches built by ingest itself, one open batch per partition, handed to aiokafka whole.

aiokafka's per-record `send` checks the metadata, the record's size and partition, builds a TopicPartition,
appends to the accumulator's batch and makes a future per record, and on the broker's answer builds a
RecordMetadata and resolves each of those futures: most of what a Segment batch event cost to publish. Its
batch API (`create_batch`, `BatchBuilder.append`, `send_batch`) takes a whole record batch with one future
for all of it. The records and their order within a partition are the same; the broker acknowledges whole
batches in either case, so nobody is answered before Kafka acknowledged every one of their records.

Concurrent requests share batches, as they shared aiokafka's: each partition has one open batch that
records are appended to, and a flusher that hands the partition's batches to the producer one after the
other. `send_batch` waits while the producer still holds an unsent batch of that partition, and records
arriving meanwhile fill the next one, so a busy partition sends a few hundred records per produce request.

At a live store's rate (the end-to-end load: about 370 requests/s), a partition is idle between requests, so
almost every request makes a batch of its own and waits for it alone: what a batch and a wait cost is paid
per request there. So a partition's flusher is one task for the process's life, woken when a batch is
queued, not a task made for each batch; and a request waits for its batches through one future of its
own, resolved by a callback on each, instead of an `asyncio.shield` (a future and two callbacks more) per
batch: one record on an idle partition, from append to its acknowledgement, 25.6 -> 22.4 us of CPU (issue 14,
eighth round). Ingest alone with a broker at the end-to-end mix's 1,000 events/s: 223.7 -> 214.7 us of CPU an
event (ninth round, 4 alternated pairs, all lower); at saturation the same as before (Segment batches 45,700
and 45,530 events/s in the quiet pair), so round 8's fall to 1.59x below aiokafka alone was not this.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerClosed

# Per partition, batches (256 KiB at most each) waiting to be handed to the producer: beyond this, Kafka is
# far behind. aiokafka's `send` bounded it by making senders wait for the one open batch of a partition.
MAX_WAITING_BATCHES = 16
# The record batch builder wants a list; it only reads it.
_NONE: list[tuple[str, bytes]] = []


class _Batch:
    """An aiokafka BatchBuilder and the future of its delivery, which every request with records in it
    waits on."""

    __slots__ = ("builder", "delivered")

    def __init__(self, builder: Any, delivered: asyncio.Future[None]) -> None:
        self.builder = builder
        self.delivered = delivered


class PartitionBatches:
    """Appends records to one topic's partitions; `delivered` futures say when Kafka acknowledged them."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        # Per partition: the batches not yet handed to the producer, oldest first; the last one is open.
        self._waiting: dict[int, collections.deque[_Batch]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        # Per partition whose flusher has handed over every batch: the future that wakes it.
        self._idle: dict[int, asyncio.Future[None]] = {}
        self._closing = False

    def behind(self, partitions: set[int]) -> bool:
        """Whether any of these partitions has more batches waiting than the producer can send soon: Kafka
        is not keeping up, and a request is refused (503, retried later) rather than queued without end."""
        waiting = self._waiting
        return any(len(waiting.get(p, ())) > MAX_WAITING_BATCHES for p in partitions)

    def append(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Add a record to the partition's open batch; the future is that batch's acknowledgement (shared:
        await it through `acknowledged`, never directly)."""
        queue = self._waiting.get(partition)
        if queue is None:
            queue = self._waiting[partition] = collections.deque()
        # The timestamp is the append time, as `send` gives a record without one. A full batch refuses the
        # record (None) and it opens the next one.
        last = queue[-1] if queue else None
        if last is None or last.builder.append(timestamp=None, key=key, value=value, headers=_NONE) is None:
            last = _Batch(self._producer.create_batch(), asyncio.get_running_loop().create_future())
            last.builder.append(timestamp=None, key=key, value=value, headers=_NONE)
            queue.append(last)
            idle = self._idle.pop(partition, None)
            if idle is not None:
                idle.set_result(None)
            elif partition not in self._flushers:
                flusher = asyncio.get_running_loop().create_task(self._flush(partition, queue))
                self._flushers[partition] = flusher
        return last.delivered

    async def _flush(self, partition: int, queue: collections.deque[_Batch]) -> None:
        try:
            while True:
                if not queue:
                    if self._closing:
                        return
                    # Every batch is in the producer's hands: sleep until `append` queues the next one (or
                    # `close` ends this).
                    idle = self._idle[partition] = asyncio.get_running_loop().create_future()
                    await idle
                    continue
                batch = queue[0]
                try:
                    # While send_batch waits for the producer to take the partition's previous batch, this one
                    # stays open: records arriving meanwhile still join it.
                    sent = await self._producer.send_batch(batch.builder, self._topic, partition=partition)
                except asyncio.CancelledError:
                    _settle(queue.popleft().delivered, ProducerClosed())
                    raise
                except Exception as exc:  # its waiters answer 503; the next batch tries again
                    _settle(queue.popleft().delivered, exc)
                    continue
                # It is in the producer's queue now, and no other task has run since send_batch put it there
                # (aiokafka 0.14 returns without suspending once it has), so the sender has not taken it yet.
                # Closed now, before it can: nothing may join a batch the sender took (its sequence number
                # counts the records the batch held then).
                batch.builder.close()
                queue.popleft()
                sent.add_done_callback(lambda done, batch=batch: _settle_from(batch.delivered, done))
        finally:
            del self._flushers[partition]
            self._idle.pop(partition, None)
            # Cancelled (the producer is closing): what never reached the producer fails, not hangs.
            while queue:
                _settle(queue.popleft().delivered, ProducerClosed())

    async def close(self, within_seconds: float = 10.0) -> None:
        """Wait until every batch is in the producer's hands (before the producer stops), at most
        `within_seconds`: with Kafka away, what is left fails (its requests have long answered 503)."""
        deadline = asyncio.get_running_loop().time() + within_seconds
        # Flushers end once their partition has nothing left to hand over; the idle ones at once.
        self._closing = True
        for idle in self._idle.values():
            idle.set_result(None)
        self._idle.clear()
        while self._flushers:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                for flusher in list(self._flushers.values()):
                    flusher.cancel()
                await asyncio.gather(*self._flushers.values(), return_exceptions=True)
                return
            await asyncio.wait(list(self._flushers.values()), timeout=left)


def _settle_from(delivered: asyncio.Future[None], sent: asyncio.Future[Any]) -> None:
    if sent.cancelled():
        _settle(delivered, KafkaError("the batch's delivery was cancelled"))
    else:
        _settle(delivered, sent.exception())


def _settle(delivered: asyncio.Future[None], failure: BaseException | None) -> None:
    if delivered.done():
        return
    if failure is None:
        delivered.set_result(None)
    else:
        delivered.set_exception(failure)
        # Retrieved here, so asyncio does not log it when every waiter has already given up (timed out).
        delivered.exception()


async def acknowledged(deliveries: set[asyncio.Future[None]] | list[asyncio.Future[None]]) -> None:
    """Wait for every delivery; raise the first failure. The deliveries are shared with other requests, so
    the wait is on a future of this request's own, which a request giving up (its timeout) cancels without
    touching them."""
    pending = []
    for delivered in deliveries:
        if delivered.done():
            delivered.result()
        else:
            pending.append(delivered)
    if not pending:
        return
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(pending)

    def settled(delivered: asyncio.Future[None]) -> None:
        nonlocal remaining
        if waiter.done():  # given up, or failed by an earlier delivery
            return
        if delivered.cancelled():  # never, as _settle settles them; a 503 rather than a wait if it were
            failure: BaseException | None = KafkaError("the batch's delivery was cancelled")
        else:
            failure = delivered.exception()
        if failure is not None:
            waiter.set_exception(failure)
            return
        remaining -= 1
        if not remaining:
            waiter.set_result(None)

    for delivered in pending:
        delivered.add_done_callback(settled)
    try:
        await waiter
    finally:
        if remaining:
            for delivered in pending:
                delivered.remove_done_callback(settled)

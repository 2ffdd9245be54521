"""A consumer as an explicit pipeline: decode -> handle the batch (one DB transaction) -> dead-letter the
poison -> commit offsets. Committing is always the last step, so a crash anywhere before it means the batch
is delivered again, and the handler's idempotency (a unique event id per row) makes that harmless.

The pipeline sees Kafka through three small protocols (Record, Consumer, Producer) that aiokafka's classes
satisfy, so its rules are also unit-tested against an in-memory fake (tests/kafka_fakes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from shared.consumer_progress import ReadProgress
from shared.kafka import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, dlq_topic, start_forever
from shared.logging import get_logger
from shared.transient import is_bad_data, is_transient
from shared.workers import sleep_backoff

log = get_logger(__name__)

T = TypeVar("T")

CONSUMED = Counter(
    "consumer_messages_total", "Messages consumed, by consumer and outcome", ["consumer", "outcome"]
)
BATCH_SECONDS = Histogram(
    "consumer_batch_seconds",
    "Time to decode, persist and commit one batch",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "consumer_transient_retries_total", "Batches retried after a transient failure", ["consumer"]
)


class Record(Protocol):
    """One consumed message (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int:
        """When the producer appended it, in milliseconds since the epoch (-1 when it has none)."""


Batches = Mapping[TopicPartition, Sequence[Record]]


class Consumer(Protocol):
    """What the pipeline needs of a consumer in a group (aiokafka's AIOKafkaConsumer)."""

    async def start(self) -> None:
        """Connect and join the group; raises KafkaError or OSError while the cluster is unreachable."""

    async def stop(self) -> None:
        """Leave the group and close; what was not committed is delivered again to the next owner."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Record]]:
        """The next records of the assigned partitions, in offset order per partition (waits at most
        timeout_ms when none are buffered)."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the offset of the next record to read; raises CommitFailedError when
        the group rebalanced and the partition is no longer ours."""

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this member now."""

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record getmany returns of the partition (waits while it has none)."""

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset as its last fetch saw it (None before any fetch)."""

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        """When the partition's last fetch answered, in milliseconds since the epoch (None before any)."""

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partitions, from the cluster's metadata (None before the consumer has it)."""


class Producer(Protocol):
    """What the pipeline needs of a producer to dead-letter (aiokafka's AIOKafkaProducer)."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """Queue a record; the returned awaitable resolves once the broker acknowledged it (or raises)."""


class DlqLimitExceeded(RuntimeError):
    """Too many poison messages in a row: more likely a bad deploy than bad data, so stop and shout."""


@dataclass(frozen=True)
class DlqLimit:
    """At most this many invalid messages in a row on one partition before the consumer stops."""

    max_consecutive_invalid: int = 100


@dataclass
class DlqLimitState:
    """Consecutive invalid messages, counted per partition as getsentry/arroyo counts them (arroyo/dlq.py,
    DlqLimitState): an invalid message continues the run when it directly follows the partition's last
    invalid offset, and starts a new run of one otherwise (a valid message, a gap, a rebalance)."""

    limit: DlqLimit
    last_invalid: dict[TopicPartition, int] = field(default_factory=dict)
    consecutive: dict[TopicPartition, int] = field(default_factory=dict)

    def record_invalid(self, record: Record) -> bool:
        """Count one invalid message; False when it takes its partition over the limit."""
        tp = TopicPartition(record.topic, record.partition)
        follows = self.last_invalid.get(tp) == record.offset - 1
        self.consecutive[tp] = self.consecutive.get(tp, 0) + 1 if follows else 1
        self.last_invalid[tp] = record.offset
        return self.consecutive[tp] <= self.limit.max_consecutive_invalid


@dataclass(frozen=True)
class Invalid:
    record: Record
    reason: str


# How long a poll that found the consumer's buffer stale waits for the fetch it triggered (see
# ConsumerPipeline._caught_up): one round trip to the broker when events are flowing, which on this loaded
# machine stays well under it; the most a batch can be delayed when none came.
LIVE_CATCH_UP_MS = 20

# How many records a slice of decoding ahead takes before it lets the batch in hand go on (see _read_ahead).
_AHEAD_SLICE = 100


@dataclass
class _Ahead(Generic[T]):
    """The next batch, taken while the one in hand was handled, and its first records already decoded (each
    value, or why it is invalid), in the order `_in_order` gives."""

    batches: Batches
    decoded: list[T | Invalid]


class ConsumerPipeline(Generic[T]):
    def __init__(
        self,
        *,
        name: str,
        consumer_factory: Callable[[], Consumer],
        dlq_producer: Callable[[], Producer | None],
        decode: Callable[[bytes], T],
        handle: Callable[[Sequence[T]], Awaitable[Any]],
        dlq_limit: DlqLimit = DlqLimit(),
        max_records: int = 1000,
        poll_timeout_ms: int = 100,
        decode_ahead: int = 0,
        catch_up_ms: int = 0,
        prepare: Callable[[Sequence[T]], None] | None = None,
        unprepare: Callable[[], Awaitable[None]] | None = None,
        announce: Callable[[Sequence[bytes | None]], None] | None = None,
        progress: ReadProgress | None = None,
    ) -> None:
        self._name = name
        self._consumer_factory = consumer_factory
        self._dlq_producer = dlq_producer
        self._decode = decode
        self._handle = handle
        self._dlq_limit = DlqLimitState(dlq_limit)
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        # With `decode_ahead`, while a full batch (a backlog) is handled, the next one is taken from what
        # the consumer has buffered already and its first `decode_ahead` records decoded, in slices, in
        # the handler's waits for the database: that CPU work then overlaps PostgreSQL's instead of
        # following it. Bounded because a decoded event holds several times its bytes.
        self._decode_ahead = decode_ahead
        # With `prepare`, a batch read ahead is decoded whole, and its valid values (as `handle` will get
        # them, the same objects in the same order, unless a rebalance cuts the batch first) go to
        # `prepare` while the batch in hand is still handled: the handler may start on them (the segmenter
        # sends their claim). `unprepare` says the values prepared will not be handled as they were
        # (a rebalance cut the batch, or the consumer stops).
        self._prepare = prepare
        self._unprepare = unprepare
        # With `announce` (and `prepare`), a batch read ahead is first handed over as its records' raw
        # values, in the order `prepare` gets the decoded ones, before any is decoded: the handler may start
        # on what it can tell from the bytes alone (the segmenter sends the claim of their ids, which then
        # runs while they are decoded). `prepare` follows as without; a value it lacks (invalid) is the
        # handler's to notice. `unprepare` covers both.
        self._announce = announce
        # With `catch_up_ms`, a batch taken from records the consumer had buffered while the previous batch
        # was handled is topped up by one more poll, waiting at most that long (see _caught_up).
        self._catch_up_ms = catch_up_ms
        # With `progress`, how far the batches handled have read each partition, in the records' time
        # (shared/consumer_progress.py): the segmenter's timers wait for it.
        self._progress = progress
        self._consumer: Consumer | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._consumer is not None

    def assignment(self) -> set[TopicPartition]:
        """The partitions this instance holds now (empty before it joined its group)."""
        consumer = self._consumer
        return set(consumer.assignment()) if consumer is not None else set()

    def read_before(self) -> dict[TopicPartition, datetime]:
        """Of each partition this instance holds now, a time before which every record sent to it has been
        handled, when known (with `progress`; shared/consumer_progress.py)."""
        if self._progress is None:
            return {}
        return self._progress.read_before(self.assignment())

    def partition_count(self, topic: str) -> int | None:
        """How many partitions the topic has, once this instance's consumer has its metadata (every member's
        partitions, not only those it holds)."""
        if self._consumer is None:
            return None
        found = self._consumer.partitions_for_topic(topic)
        return len(found) if found else None

    async def run_forever(self) -> None:
        self._consumer = await start_forever(self._consumer_factory, self._name, log)
        consumer = self._consumer
        ahead: asyncio.Task[_Ahead[T]] | None = None
        polled = time.monotonic()  # when the last poll returned: the consumer's buffer is that old at most
        try:
            while not self._stopping:
                decoded: list[T | Invalid] = []
                if ahead is not None:
                    taken = await ahead
                    ahead = None
                    batches, decoded = self._still_assigned(consumer, taken)
                    if batches is not taken.batches:
                        await self._unprepared()
                    # In a backlog every batch is read ahead, so the check after a batch below never runs;
                    # without this one, a partition with nothing left to read (no traffic, or its share of
                    # the backlog done) kept its bound until the whole backlog drained, and held every timer
                    # that long. What the consumer returned of the partitions outside this batch is handled.
                    await self._note_caught_up(consumer, pending=batches.keys())
                else:
                    called = time.monotonic()
                    batches = await consumer.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                    )
                    if batches and self._stale(polled, called):
                        batches = await self._caught_up(consumer, batches)
                    polled = time.monotonic()
                if not batches:
                    await self._note_caught_up(consumer)
                    continue
                # Only a full batch says more is waiting; live traffic's small polls are left as they are.
                reads_ahead = self._decode_ahead or self._prepare is not None
                if reads_ahead and sum(len(r) for r in batches.values()) >= self._max_records:
                    ahead = asyncio.create_task(self._read_ahead(consumer))
                await self.process(consumer, batches, decoded)
                if ahead is None:
                    await self._note_caught_up(consumer)
        finally:
            if ahead is not None:
                # Taken but not handled, so not committed: the partitions' next owner (or we, on a restart)
                # reads those records again.
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead
            with contextlib.suppress(Exception):
                await self._unprepared()
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def _note_caught_up(self, consumer: Consumer, pending: Collection[TopicPartition] = ()) -> None:
        """Every record the consumer returned is handled now, but those of `pending` (a batch in hand): the
        other partitions it has read to their end are read up to their last fetch."""
        if self._progress is not None:
            await self._progress.caught_up(consumer, pending)

    def _stale(self, polled: float, called: float) -> bool:
        """Whether the records a poll called at `called` returned were taken from the consumer's buffer
        (it answered without waiting for a fetch) and filled at least `catch_up_ms` before: the previous
        poll (at `polled`) sent the fetch that filled it."""
        if not self._catch_up_ms:
            return False
        bound = self._catch_up_ms / 1000
        return called - polled >= bound and time.monotonic() - called < bound / 4

    async def _caught_up(self, consumer: Consumer, batches: Batches) -> Batches:
        """The batch with what reached the broker while the previous batch was handled.

        aiokafka fetches a partition again only once the records it holds of it were all taken, so the
        records a poll finds buffered are those of the fetch sent when the previous poll took its records:
        as old as the previous batch's handling. What arrived since is still on the broker, and without this
        waited for the whole next batch too (at 1,000 events/s, batches of about 150 ms: a third of the
        2xx-to-transaction time). Taking the buffer triggered that fetch; one more poll takes its answer (one
        round trip while events are flowing, at most `catch_up_ms` when none came). Done only when the
        buffer is stale (_stale), and never for a full batch."""
        room = self._max_records - sum(len(r) for r in batches.values())
        if room <= 0:
            return batches
        more = await consumer.getmany(timeout_ms=self._catch_up_ms, max_records=room)
        if not more:
            return batches
        merged = {tp: list(records) for tp, records in batches.items()}
        for tp, records in more.items():
            merged.setdefault(tp, []).extend(records)
        return merged

    async def _read_ahead(self, consumer: Consumer) -> _Ahead[T]:
        """The next batch as the consumer holds it now (no wait), and its first records decoded (all of
        them, prepared, with `prepare`)."""
        batches = await consumer.getmany(timeout_ms=0, max_records=self._max_records)
        if self._announce is not None and self._prepare is not None and batches:
            self._announce([record.value for record in _in_order(batches)])
        decoded: list[T | Invalid] = []
        limit = self._max_records if self._prepare is not None else self._decode_ahead
        for record in _in_order(batches):
            if len(decoded) >= limit:
                break
            if decoded and len(decoded) % _AHEAD_SLICE == 0:
                # Let the batch in hand go on as soon as the database answers it: its statements come
                # first, this only fills their waits.
                await asyncio.sleep(0)
            decoded.append(self._decoded(record))
        if self._prepare is not None:
            values = [value for value in decoded if not isinstance(value, Invalid)]
            if values:
                self._prepare(values)
        return _Ahead(batches, decoded)

    async def _unprepared(self) -> None:
        if self._unprepare is not None:
            await self._unprepare()

    def _still_assigned(self, consumer: Consumer, taken: _Ahead[T]) -> tuple[Batches, list[T | Invalid]]:
        """A batch read ahead, less the partitions a rebalance took from us meanwhile (their new owner reads
        those records from the committed offset), with what was decoded of the rest."""
        assigned = consumer.assignment()
        if all(tp in assigned for tp in taken.batches):
            return taken.batches, taken.decoded
        kept = {tp: records for tp, records in taken.batches.items() if tp in assigned}
        held = {id(r) for r in _in_order(kept)}
        decoded = [
            value
            for record, value in zip(_in_order(taken.batches), taken.decoded, strict=False)
            if id(record) in held
        ]
        return kept, decoded

    def stop_after_batch(self) -> None:
        """Finish the batch in hand, commit it, then leave the group (a clean shutdown)."""
        self._stopping = True

    async def process(
        self, consumer: Consumer, batches: Batches, decoded: Sequence[T | Invalid] = ()
    ) -> None:
        """Handle, dead-letter and commit one batch; `decoded`: its first records' decodings, when they were
        decoded ahead (in `_in_order`'s order)."""
        with BATCH_SECONDS.labels(self._name).time():
            valid: list[tuple[Record, T]] = []
            invalid: list[Invalid] = []
            for i, record in enumerate(_in_order(batches)):
                value = decoded[i] if i < len(decoded) else self._decoded(record)
                if isinstance(value, Invalid):
                    invalid.append(value)
                else:
                    valid.append((record, value))
            if valid:
                try:
                    await self._handle_with_retry([value for _, value in valid])
                except Exception as exc:
                    if not is_bad_data(exc):
                        raise
                    await self._isolate(valid, invalid)
            if invalid:
                self._count_invalid(invalid)
                await self._dead_letter(invalid)
            await self._commit(consumer, batches)
        if self._progress is not None:
            self._progress.handled(batches)
        CONSUMED.labels(self._name, "processed").inc(sum(len(r) for r in batches.values()) - len(invalid))
        CONSUMED.labels(self._name, "dead_lettered").inc(len(invalid))

    def _decoded(self, record: Record) -> T | Invalid:
        try:
            if record.value is None:
                raise ValueError("message has no value")
            return self._decode(record.value)
        except (ValidationError, ValueError) as exc:
            return Invalid(record, _reason(exc))

    def _count_invalid(self, invalid: list[Invalid]) -> None:
        """Before anything is dead-lettered or committed: stop when a partition has had too many invalid
        messages in a row. Counted in offset order, once the batch's isolation found every one of them."""
        for item in sorted(invalid, key=lambda i: (i.record.topic, i.record.partition, i.record.offset)):
            if not self._dlq_limit.record_invalid(item.record):
                raise DlqLimitExceeded(
                    f"more than {self._dlq_limit.limit.max_consecutive_invalid} invalid messages in a row "
                    f"on {item.record.topic}/{item.record.partition}; last: {item.reason}"
                )

    async def _isolate(self, valid: list[tuple[Record, T]], invalid: list[Invalid]) -> None:
        """The database refused the batch's data: handle its messages one by one, so only the message(s)
        it refuses go to the dead-letter topic and the rest of the batch still counts."""
        log.warning("batch_refused_isolating", consumer=self._name, messages=len(valid))
        for record, value in valid:
            try:
                await self._handle_with_retry([value])
            except Exception as exc:
                if not is_bad_data(exc):
                    raise
                invalid.append(Invalid(record, f"refused by the database: {_reason(exc)}"))

    async def _handle_with_retry(self, valid: list[T]) -> None:
        attempt = 0
        while True:
            try:
                await self._handle(valid)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                RETRIES.labels(self._name).inc()
                log.warning("batch_retry", consumer=self._name, attempt=attempt, error=type(exc).__name__)
                await sleep_backoff(attempt)
                attempt += 1

    async def _dead_letter(self, invalid: list[Invalid]) -> None:
        attempt = 0
        while True:
            producer = self._dlq_producer()
            try:
                if producer is None:
                    raise ConnectionError("DLQ producer not connected yet")
                futures = [
                    await producer.send(
                        dlq_topic(item.record.topic),
                        value=item.record.value,
                        key=item.record.key,
                        headers=[
                            (DLQ_REASON, item.reason.encode()[:1000]),
                            (DLQ_TOPIC, item.record.topic.encode()),
                            (DLQ_PARTITION, str(item.record.partition).encode()),
                            (DLQ_OFFSET, str(item.record.offset).encode()),
                        ],
                    )
                    for item in invalid
                ]
                await asyncio.gather(*futures)
                for item in invalid:
                    log.warning(
                        "dead_lettered",
                        consumer=self._name,
                        topic=item.record.topic,
                        partition=item.record.partition,
                        offset=item.record.offset,
                        reason=item.reason[:300],
                    )
                return
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, ConnectionError)):
                    raise
                await sleep_backoff(attempt)
                attempt += 1

    async def _commit(self, consumer: Consumer, batches: Batches) -> None:
        # Only the partitions still ours. A rebalance that ended while the batch was handled (a second
        # instance joining the group, or one leaving) took some away, and aiokafka refuses to commit a
        # partition it no longer assigns with IllegalStateError, not CommitFailedError: that ended the
        # consumer, and so the process. In the benchmark's two-instance run one of the two died that way
        # 3 s after the other joined, in 4 runs of 4, and the survivor did all the work (two processes
        # 0.90-1.04x one); with this, neither did in 2 runs of 2 (1.30 and 1.36x one). Their new owner
        # reads those records again from the committed offset, as after CommitFailedError below.
        assigned = consumer.assignment()
        done = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
        offsets = {tp: offset for tp, offset in done.items() if tp in assigned}
        if len(offsets) < len(done):
            log.warning(
                "commit_skipped_revoked_partitions", consumer=self._name, partitions=len(done) - len(offsets)
            )
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we worked: the partition's new owner gets the batch again, and the
            # handler's idempotency makes the second delivery a no-op.
            log.warning("commit_failed_after_rebalance", consumer=self._name, error=str(exc))


def _in_order(batches: Batches) -> Iterator[Record]:
    """A batch's records, partition after partition (sorted), each partition's in offset order."""
    for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
        yield from batches[tp]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):
        # The driver's message only: SQLAlchemy's own text carries the statement's parameters (personal data).
        message = str(exc.orig).splitlines()[0] if str(exc.orig) else ""
        return f"{type(exc.orig).__name__}: {message[:300]}"
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if not errors:
            return "validation error"
        where = ".".join(str(p) for p in errors[0]["loc"]) or "root"
        return f"{exc.error_count()} validation error(s); first at {where}: {errors[0]['msg']}"
    return f"{type(exc).__name__}: {exc}"

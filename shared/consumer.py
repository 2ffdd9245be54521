"""A consumer as an explicit pipeline: decode -> handle the batch (one DB transaction) -> dead-letter the
poison -> commit offsets. Committing is always the last step, so a crash anywhere before it means the batch
is delivered again, and the handler's idempotency (a unique event id per row) makes that harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

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


class DlqLimitExceeded(RuntimeError):
    """Too many poison messages in a row: more likely a bad deploy than bad data, so stop and shout."""


@dataclass(frozen=True)
class DlqLimit:
    max_consecutive_invalid: int = 100


@dataclass(frozen=True)
class Invalid:
    record: ConsumerRecord[bytes, bytes]
    reason: str


class ConsumerPipeline(Generic[T]):
    def __init__(
        self,
        *,
        name: str,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        dlq_producer: Callable[[], AIOKafkaProducer | None],
        decode: Callable[[bytes], T],
        handle: Callable[[Sequence[T]], Awaitable[Any]],
        dlq_limit: DlqLimit = DlqLimit(),
        max_records: int = 1000,
        poll_timeout_ms: int = 100,
    ) -> None:
        self._name = name
        self._consumer_factory = consumer_factory
        self._dlq_producer = dlq_producer
        self._decode = decode
        self._handle = handle
        self._dlq_limit = dlq_limit
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._consecutive_invalid = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._consumer is not None

    def assignment(self) -> set[TopicPartition]:
        """The partitions this instance holds now (empty before it joined its group)."""
        consumer = self._consumer
        return set(consumer.assignment()) if consumer is not None else set()

    async def run_forever(self) -> None:
        self._consumer = await start_forever(self._consumer_factory, self._name, log)
        try:
            while not self._stopping:
                batches = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                if batches:
                    await self.process(self._consumer, batches)
        finally:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    def stop_after_batch(self) -> None:
        """Finish the batch in hand, commit it, then leave the group (a clean shutdown)."""
        self._stopping = True

    async def process(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        with BATCH_SECONDS.labels(self._name).time():
            valid: list[tuple[ConsumerRecord[bytes, bytes], T]] = []
            invalid: list[Invalid] = []
            for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
                for record in batches[tp]:
                    try:
                        if record.value is None:
                            raise ValueError("message has no value")
                        valid.append((record, self._decode(record.value)))
                        self._consecutive_invalid = 0
                    except (ValidationError, ValueError) as exc:
                        self._poisoned(invalid, Invalid(record, _reason(exc)), exc)
            if valid:
                try:
                    await self._handle_with_retry([value for _, value in valid])
                except Exception as exc:
                    if not is_bad_data(exc):
                        raise
                    await self._isolate(valid, invalid)
            if invalid:
                await self._dead_letter(invalid)
            await self._commit(consumer, batches)
        CONSUMED.labels(self._name, "processed").inc(sum(len(r) for r in batches.values()) - len(invalid))
        CONSUMED.labels(self._name, "dead_lettered").inc(len(invalid))

    def _poisoned(self, invalid: list[Invalid], item: Invalid, exc: BaseException) -> None:
        invalid.append(item)
        self._consecutive_invalid += 1
        if self._consecutive_invalid > self._dlq_limit.max_consecutive_invalid:
            raise DlqLimitExceeded(
                f"{self._consecutive_invalid} invalid messages in a row on "
                f"{item.record.topic}/{item.record.partition}; last: {item.reason}"
            ) from exc

    async def _isolate(
        self, valid: list[tuple[ConsumerRecord[bytes, bytes], T]], invalid: list[Invalid]
    ) -> None:
        """The database refused the batch's data: handle its messages one by one, so only the message(s)
        it refuses go to the dead-letter topic and the rest of the batch still counts."""
        log.warning("batch_refused_isolating", consumer=self._name, messages=len(valid))
        for record, value in valid:
            try:
                await self._handle_with_retry([value])
                self._consecutive_invalid = 0
            except Exception as exc:
                if not is_bad_data(exc):
                    raise
                self._poisoned(invalid, Invalid(record, f"refused by the database: {_reason(exc)}"), exc)

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

    async def _commit(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we worked: the partition's new owner gets the batch again, and the
            # handler's idempotency makes the second delivery a no-op.
            log.warning("commit_failed_after_rebalance", consumer=self._name, error=str(exc))


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

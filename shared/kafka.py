"""Kafka helpers: topic names, client factories with our durability settings, topic creation, probes.

Clients are built by the entry points (lifespan / main) and passed down; nothing here connects at import.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.settings import KafkaSettings


class Startable(Protocol):
    """A Kafka client as start_forever sees it: aiokafka's producer or consumer, or a fake of one."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ClientT = TypeVar("ClientT", bound=Startable)

STOREFRONT_EVENTS = "storefront-events"
FUNNEL_EVENTS = "funnel-events"

# Headers put on a dead-lettered message, so an operator can find and replay the original.
DLQ_REASON = "dlq.reason"
DLQ_TOPIC = "dlq.original.topic"
DLQ_PARTITION = "dlq.original.partition"
DLQ_OFFSET = "dlq.original.offset"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


# aiokafka keeps one produce request in flight per broker, so what one round trip carries bounds the
# throughput: 16 KiB batches (its default) hold a dozen canonical events per partition. 256 KiB lets a
# busy producer send a few hundred per partition per trip; a quiet one still sends after linger_ms.
MAX_BATCH_BYTES = 256 * 1024


def build_producer(settings: KafkaSettings, client_id: str, *, linger_ms: int = 5) -> AIOKafkaProducer:
    # acks=all + idempotence: an acknowledged event is on every in-sync replica, and producer retries
    # never write it twice.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
    )


def build_consumer(
    settings: KafkaSettings,
    group_id: str,
    topics: Sequence[str],
    client_id: str,
    *,
    max_poll_records: int = 500,
    max_partition_fetch_bytes: int = 1024 * 1024,
) -> AIOKafkaConsumer:
    # Offsets are committed by hand, after the database transaction that holds the batch's effects.
    # A member learns that its group rebalances (an instance joining or leaving, a rolling deploy) only
    # from the answer to its next heartbeat: the broker still takes its commits meanwhile, and the others
    # wait until it rejoins. With aiokafka's default 3 s the joining segmenter waited 2.83-3.03 s for its
    # partitions in the benchmark's two-instance runs, 0.84-1.04 s with 1 s (3 pairs, alternated): Kafka's
    # docs say to lower it "to control the expected time for normal rebalances". One small request a
    # second; the session timeout stays 10 s, ten heartbeats (Kafka asks for at least three).
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        # What one fetch brings of a partition at most (aiokafka's and Kafka's default 1 MiB unless asked).
        max_partition_fetch_bytes=max_partition_fetch_bytes,
    )


async def ensure_topics(
    settings: KafkaSettings, topics: Sequence[str], *, partitions: int | None = None
) -> None:
    """Create the topics a service writes to; an existing topic is left as it is."""
    configs = {}
    if settings.kafka_min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.kafka_min_insync_replicas)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=topic,
                num_partitions=partitions or settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
                topic_configs=configs,
            )
            for topic in topics
            if topic not in existing
        ]
        if missing:
            # Another instance may create one between our list and create; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def kafka_reachable(producer: AIOKafkaProducer, within_seconds: float = 2.0) -> bool:
    """True when a broker answers a metadata request now (not merely when we once connected)."""
    try:
        async with asyncio.timeout(within_seconds):
            return bool(await producer.client.fetch_all_metadata())
    except (TimeoutError, KafkaError, OSError):
        return False


async def start_forever(factory: Callable[[], ClientT], what: str, log: Any) -> ClientT:
    """Start a Kafka client, retrying with backoff: a service boots (unready) while Kafka is still down."""
    attempt = 0
    while True:
        client = factory()
        try:
            await client.start()
        except (KafkaError, OSError) as exc:
            await client.stop()
            log.warning("kafka_connect_failed", client=what, attempt=attempt, error=str(exc))
            await asyncio.sleep(min(5.0, 0.2 * 2 ** min(attempt, 10)))
            attempt += 1
            continue
        log.info("kafka_connected", client=what)
        return client

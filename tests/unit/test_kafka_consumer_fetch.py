"""What one fetch brings of a partition: Kafka's default 1 MiB for a consumer unless asked, 2 MiB for the
segmenter's (shared/kafka.py, services/segmenter/entrypoints/api.py)."""

from __future__ import annotations

from services.segmenter.entrypoints.api import SEGMENTER_FETCH_BYTES
from shared.kafka import build_consumer
from shared.settings import KafkaSettings

SETTINGS = KafkaSettings(kafka_bootstrap_servers="127.0.0.1:9")


async def test_a_consumer_fetches_kafkas_default_unless_asked() -> None:
    consumer = build_consumer(SETTINGS, "g", ["t"], "c")
    try:
        # aiokafka's own name: the consumer is not started, so this is all there is to read.
        assert consumer._max_partition_fetch_bytes == 1024 * 1024
    finally:
        await consumer.stop()


async def test_the_segmenters_fetches_bring_up_to_2_mib_of_a_partition() -> None:
    assert SEGMENTER_FETCH_BYTES == 2 * 1024 * 1024
    consumer = build_consumer(SETTINGS, "g", ["t"], "c", max_partition_fetch_bytes=SEGMENTER_FETCH_BYTES)
    try:
        assert consumer._max_partition_fetch_bytes == SEGMENTER_FETCH_BYTES
    finally:
        await consumer.stop()

"""What one fetch brings of a partition: Kafka's default 1 MiB for a consumer unless asked; for the
segmenter's, `SEGMENTER_FETCH_BYTES` (2 MiB unless set; shared/kafka.py, services/segmenter/settings.py,
services/segmenter/entrypoints/api.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.segmenter.entrypoints.api import segmenter_consumer
from services.segmenter.settings import SegmenterSettings
from shared.kafka import build_consumer
from shared.settings import KafkaSettings

BOOTSTRAP = "127.0.0.1:9"
MIB = 1024 * 1024


async def test_a_consumer_fetches_kafkas_default_unless_asked() -> None:
    consumer = build_consumer(KafkaSettings(kafka_bootstrap_servers=BOOTSTRAP), "g", ["t"], "c")
    try:
        # aiokafka's own name: the consumer is not started, so this is all there is to read.
        assert consumer._max_partition_fetch_bytes == MIB
    finally:
        await consumer.stop()


async def test_the_segmenters_fetches_bring_up_to_2_mib_of_a_partition_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEGMENTER_FETCH_BYTES", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BOOTSTRAP)
    consumer = segmenter_consumer(SegmenterSettings())
    try:
        assert consumer._max_partition_fetch_bytes == 2 * MIB
    finally:
        await consumer.stop()
    # A store whose events are much larger sets more, read from the environment as every setting.
    monkeypatch.setenv("SEGMENTER_FETCH_BYTES", str(8 * MIB))
    consumer = segmenter_consumer(SegmenterSettings())
    try:
        assert consumer._max_partition_fetch_bytes == 8 * MIB
    finally:
        await consumer.stop()


@pytest.mark.parametrize("value", [str(MIB - 1), str(64 * MIB + 1), "lots"])
def test_a_fetch_size_below_kafkas_largest_message_or_beyond_64_mib_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Below Kafka's default largest message (1 MiB) a fetch might not hold a whole record of it.
    monkeypatch.setenv("SEGMENTER_FETCH_BYTES", value)
    with pytest.raises(ValidationError) as refused:
        SegmenterSettings()
    assert [e["loc"] for e in refused.value.errors()] == [("segmenter_fetch_bytes",)]

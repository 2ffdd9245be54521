"""The consumers' heartbeat: how soon a member learns that its group rebalances (shared/kafka.py)."""

from __future__ import annotations

from shared.kafka import build_consumer
from shared.settings import KafkaSettings


async def test_a_member_hears_of_a_rebalance_within_a_second_and_keeps_its_session() -> None:
    consumer = build_consumer(KafkaSettings(kafka_bootstrap_servers="127.0.0.1:9"), "g", ["t"], "c")
    try:
        # aiokafka's own names: the consumer is not started, so these are all there is to read.
        heartbeat = consumer._heartbeat_interval_ms
        session = consumer._session_timeout_ms
        assert heartbeat <= 1_000
        assert session >= 3 * heartbeat  # Kafka's rule: a session outlives at least three heartbeats
    finally:
        await consumer.stop()

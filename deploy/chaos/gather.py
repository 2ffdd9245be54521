"""Reading back what happened: the segmenter's and notifier's tables, the SMTP sink's files, the DLQs."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.chaos.verdict import Email, flow_of

_PARSER = BytesParser(policy=policy.default)

_DUPLICATE_TRANSITIONS = """
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM segmenter.transitions
    GROUP BY store_id, customer_id, dimension, from_value, to_value, event_id
    HAVING count(*) > 1
) AS repeated
"""
# Keys whose message may have reached the SMTP server: sent, claimed when a crash came (fate unknown), put
# back for a retry after an attempt, or skipped because its fate was unknown.
_HANDED_OVER = """
SELECT lower(to_address), flow, count(*) FROM notifier.messages
WHERE channel = 'email' AND to_address IS NOT NULL
  AND (status NOT IN ('pending', 'skipped') OR (status = 'pending' AND attempts > 0)
       OR (status = 'skipped' AND skip_reason = 'uncertain'))
GROUP BY 1, 2
"""


def plain_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def processed_event_ids(dsn: str, store_id: str) -> set[str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT event_id FROM segmenter.processed_events WHERE store_id = $1", store_id
        )
    finally:
        await connection.close()
    return {row[0] for row in rows}


async def duplicate_transitions(dsn: str) -> int:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await connection.fetchval(_DUPLICATE_TRANSITIONS))
    finally:
        await connection.close()


async def handed_over(dsn: str) -> dict[tuple[str, str], int]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await connection.fetch(_HANDED_OVER)
    finally:
        await connection.close()
    return {(row[0], row[1]): int(row[2]) for row in rows}


async def notifier_backlog(dsn: str) -> tuple[int, int]:
    """(messages due within a minute and not yet taken, messages claimed and not finished).

    The first is work still to do (the development registry's delays are all under a minute); the second,
    once the notifier is idle, are messages whose fate a crash left unknown."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'provisioning' "
            "OR (status = 'pending' AND due_at <= now() + interval '60 seconds')), "
            "count(*) FILTER (WHERE status = 'sending') FROM notifier.messages"
        )
    finally:
        await connection.close()
    assert row is not None
    return int(row[0]), int(row[1])


def sink_count(directory: Path) -> int:
    return sum(1 for _ in directory.glob("*.json")) if directory.is_dir() else 0


def sink_emails(directory: Path) -> list[Email]:
    """Every message the sink kept: one per envelope recipient."""
    emails = []
    for meta in sorted(directory.glob("*.json")):
        raw = meta.with_suffix(".eml")
        if not raw.is_file():
            continue
        message = _PARSER.parsebytes(raw.read_bytes())
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        message_id = str(message.get("Message-ID", "")) or raw.stem
        flow = flow_of(str(text))
        for recipient in message.get_all("To", []):
            emails.append(Email(str(recipient), message_id, flow, str(message.get("Subject", ""))))
    return emails


async def dead_letters(bootstrap: str) -> dict[str, int]:
    """Messages on every `*.dlq` topic (end minus beginning offsets)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.endswith(".dlq")]
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    partitions: dict[str, list[TopicPartition]] = {
        d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]] for d in described
    }
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await consumer.start()
    try:
        counts = {}
        for topic, parts in partitions.items():
            ends = await consumer.end_offsets(parts)
            begins = await consumer.beginning_offsets(parts)
            counts[topic] = sum(ends[p] - begins[p] for p in parts)
        return counts
    finally:
        await consumer.stop()

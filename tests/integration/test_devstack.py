"""The session's real servers work end to end: Kafka round trip, PostgreSQL DDL/DML, SMTP delivery."""

from __future__ import annotations

import time
import uuid
from email.message import EmailMessage

import aiosmtplib
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fixtures.stack import SmtpServer
from tests.polling import eventually

pytestmark = pytest.mark.integration


async def test_kafka_round_trip(kafka_bootstrap: str) -> None:
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        # The broker does not auto-create topics (as in production): creating one first is the contract.
        await admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])

        async def listed() -> bool:
            return topic in await admin.list_topics()

        # The broker answers a listing from its metadata cache, which the controller updates a moment after
        # the topic is created: on a busy machine the first listing can miss it (seen once in CI).
        await eventually(listed, 30, f"topic {topic} listed")
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [(f"demo:customer-{i}".encode(), f"event-{i}".encode()) for i in range(5)]
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"devstack-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            received += [(r.key, r.value) for records in batches.values() for r in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(sent)


async def test_postgres_round_trip(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            await conn.execute(text("CREATE TABLE devstack_probe (id int PRIMARY KEY, note text NOT NULL)"))
            await conn.execute(text("INSERT INTO devstack_probe VALUES (1, 'hello')"))
        async with engine.connect() as conn:
            note = (await conn.execute(text("SELECT note FROM devstack_probe WHERE id = 1"))).scalar_one()
            assert note == "hello"
            await conn.execute(text("DROP TABLE devstack_probe"))
            await conn.commit()
    finally:
        await engine.dispose()


async def test_smtp_delivery(smtp_server: SmtpServer) -> None:
    smtp_server.clear()
    message = EmailMessage()
    message["From"] = "Demo Store <shop@demo.example.com>"
    message["To"] = "Ana Núñez <ana@example.com>"
    message["Subject"] = "Your cart is waiting — 10% off"
    message.set_content("Hello Ana")
    message.add_alternative("<p>Hello <b>Ana</b></p>", subtype="html")

    await aiosmtplib.send(message, hostname=smtp_server.host, port=smtp_server.port)

    [received] = await smtp_server.wait_for_async(1, timeout=10)
    assert received["Subject"] == "Your cart is waiting — 10% off"
    assert received["To"].addresses[0].addr_spec == "ana@example.com"
    body = received.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().strip() == "Hello Ana"
    assert smtp_server.envelopes[0].rcpt_tos == ("ana@example.com",)

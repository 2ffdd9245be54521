from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.db import upgrade_to_head
from shared.settings import REPO_ROOT

MIGRATIONS = [
    REPO_ROOT / "services" / "segmenter" / "migrations",
    REPO_ROOT / "services" / "notifier" / "migrations",
]


@pytest.fixture(scope="session")
async def migrated_url(postgres_url: str) -> str:
    # The real Alembic histories, as a deploy runs them (env.py runs its own event loop: use a thread).
    for location in MIGRATIONS:
        await asyncio.to_thread(upgrade_to_head, location, postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
def store_id() -> str:
    """A store of its own per test, so tests sharing one database never see each other's rows."""
    return f"t{uuid.uuid4().hex[:12]}"

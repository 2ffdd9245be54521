from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.platforms import shopify_admin, woocommerce
from deploy.platforms.server import serving
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


# Credentials of the test shop and site below; a test module that needs another shape of server (a small
# throttling bucket, the API's full URL) defines its own `shop` or `site`, which pytest prefers.
PLATFORM_TOKEN = "shpat_test_0123456789abcdef"
PLATFORM_KEY, PLATFORM_SECRET = "ck_test_key_0123", "cs_test_secret_0123"


@pytest.fixture
def shop() -> Iterator[tuple[str, shopify_admin.ShopState]]:
    """A test Shopify shop (deploy/platforms) on a free port: its base URL and its state."""
    state = shopify_admin.ShopState(token=PLATFORM_TOKEN)
    with serving(shopify_admin.create_app(state)) as url:
        yield url, state


@pytest.fixture
def site() -> Iterator[tuple[str, woocommerce.SiteState]]:
    """A test WooCommerce site (deploy/platforms) on a free port: its base URL and its state."""
    state = woocommerce.SiteState(key=PLATFORM_KEY, secret=PLATFORM_SECRET)
    with serving(woocommerce.create_app(state)) as url:
        yield url, state

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.platforms import shopify_admin, woocommerce
from deploy.platforms.server import serving
from services.notifier.adapters.tables import messages
from shared.db import check_pooled_connections, upgrade_to_head
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
    # As the services' engines (shared.db.build_engine): a pooled connection the server closed is replaced
    # at checkout, so a test that ends sessions (test_segmenter_held_connection) leaves a working pool.
    check_pooled_connections(engine)
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


# What a sender still has to do with a message: it claims these across every store in the database.
_UNFINISHED = ("pending", "provisioning", "sending")


@pytest.fixture(autouse=True)
async def _messages_left_unfinished_are_closed(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a test of its own store, that store's messages still due are closed (skipped, "test_over").

    A sender claims the due messages of every store in the database, oldest first, a batch at a time: messages
    a test leaves due (a flow planned but never sent, a claim left to expire) would fill a later test's batch
    and push that test's own messages out of it, so a test's outcome would depend on the tests before it."""
    if "store_id" not in request.fixturenames or "engine" not in request.fixturenames:
        yield
        return
    # Asked for now, so that they are torn down after this fixture.
    store, engine = request.getfixturevalue("store_id"), request.getfixturevalue("engine")
    yield
    async with engine.begin() as conn:
        await conn.execute(
            update(messages)
            .where(messages.c.store_id == store, messages.c.status.in_(_UNFINISHED))
            .values(status="skipped", skip_reason="test_over")
        )


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

"""Profiles' facts documents after migration 0006, against a real PostgreSQL: a document large enough to be
compressed is stored with lz4, and read back as it was written; before the migration (downgraded to 0005)
the same document is stored with PostgreSQL's default, pglz, and a document written then changes over when
its profile is written again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import repository
from services.segmenter.adapters.profile_cache import ProfileCache
from services.segmenter.domain.profile import Profile
from shared.db import alembic_config, build_engine, upgrade_to_head
from shared.raw_sql import fetch
from shared.settings import REPO_ROOT, DatabaseSettings

pytestmark = pytest.mark.integration

MIGRATIONS = REPO_ROOT / "services" / "segmenter" / "migrations"
STORE = "demo"


def _large(customer: str, note: str = "") -> Profile:
    """A profile whose document is well past the ~2 kB at which PostgreSQL compresses a row's values."""
    identifiers = tuple(f"anon:{customer}-{note}-device-{i:03d}" for i in range(80))
    return Profile(store_id=STORE, customer_id=customer, identifiers=identifiers)


async def _write(engine: AsyncEngine, profile: Profile) -> None:
    write = repository.profiles_write([profile])
    assert write is not None
    async with engine.begin() as conn:
        await write.send(conn)


async def _stored(engine: AsyncEngine, customer: str) -> tuple[str | None, int, int]:
    """How the document is stored: its compression method, its stored size and its text's size."""
    async with engine.connect() as conn:
        (row,) = await fetch(
            conn,
            "SELECT pg_column_compression(facts) AS method, pg_column_size(facts) AS stored, "
            "octet_length(facts::text) AS text FROM segmenter.profiles "
            "WHERE store_id = $1 AND customer_id = $2",
            STORE,
            customer,
        )
    return row["method"], row["stored"], row["text"]


async def _read(engine: AsyncEngine, customer: str) -> Profile:
    async with engine.begin() as conn:
        # An empty cache: the document is read and parsed from the row.
        loaded = await repository.load_profiles_with_versions(conn, [(STORE, customer)], ProfileCache(1))
    return loaded.profiles[(STORE, customer)]


@pytest.fixture
async def database(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database of its own at the segmenter's head revision (this test moves its revision)."""
    url = postgres_server.create_database(f"compression_{uuid.uuid4().hex[:10]}")
    # Alembic's env.py runs an event loop of its own: in a thread.
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    engine = build_engine(DatabaseSettings(database_url=url), custom_plans=True)
    try:
        yield url, engine
    finally:
        await engine.dispose()


async def test_a_large_document_is_stored_with_lz4_and_read_back_whole(
    database: tuple[str, AsyncEngine],
) -> None:
    _, engine = database
    profile = _large("cust-1")
    await _write(engine, profile)
    method, stored, text = await _stored(engine, "cust-1")
    assert method == "lz4"
    assert text > 2500
    assert stored < text / 2, (stored, text)
    assert await _read(engine, "cust-1") == profile


async def test_before_the_migration_pglz_and_a_document_changes_over_when_written_again(
    database: tuple[str, AsyncEngine],
) -> None:
    url, engine = database
    await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, url), "0005")
    await _write(engine, _large("cust-2"))
    assert (await _stored(engine, "cust-2"))[0] == "pglz"

    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    assert (await _stored(engine, "cust-2"))[0] == "pglz"  # nothing rewritten by the migration
    again = _large("cust-2", "again")
    await _write(engine, again)
    assert (await _stored(engine, "cust-2"))[0] == "lz4"
    assert await _read(engine, "cust-2") == again

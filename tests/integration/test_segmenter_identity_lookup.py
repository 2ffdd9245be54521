"""The segmenter's identity look-up against a real PostgreSQL: the same answers, and one probe of the primary
key per pair however stale the table's statistics are.

A store's identities table grows by tens of thousands of rows between two automatic ANALYZEs. As a plain
join of the batch's pairs with the table, the look-up was planned from the statistics of the table's first
moments: a hash of the pairs and a sequential scan of the whole table for every batch, the statement
PostgreSQL spent most of its time on at 1,000 events/s (bench/README.md, twenty-ninth round)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import repository
from services.segmenter.adapters.unnest import params
from shared.db import build_engine, upgrade_to_head
from shared.raw_sql import fetch
from shared.settings import REPO_ROOT, DatabaseSettings

pytestmark = pytest.mark.integration

STORE = "demo"
GROWN = 30_000  # rows added after the table's statistics were taken


@pytest.fixture
async def grown(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """A database of its own whose identities table was analyzed nearly empty, then grew without an ANALYZE
    since (as on a new store in its first minutes), read through custom plans as the segmenter reads."""
    url = postgres_server.create_database(f"identities_{uuid.uuid4().hex[:10]}")
    # Alembic's env.py runs an event loop of its own: in a thread.
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "segmenter" / "migrations", url)
    engine = build_engine(DatabaseSettings(database_url=url), custom_plans=True)  # as the segmenter's
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO segmenter.identities (store_id, identifier, customer_id) "
                "SELECT 'other', 'email:early' || g, 'c' || g FROM generate_series(1, 5) g"
            )
        )
    async with engine.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text("ANALYZE segmenter.identities")
        )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO segmenter.identities (store_id, identifier, customer_id) "
                "SELECT :store, 'anon:' || md5(g::text), 'cust-' || g FROM generate_series(1, :n) g"
            ),
            {"store": STORE, "n": GROWN},
        )
    yield engine
    await engine.dispose()


def _known(i: int) -> tuple[str, str]:
    """The pair the fixture stored for customer `cust-<i>` (its identifier is md5(i), as SQL wrote it)."""
    return STORE, f"anon:{hashlib.md5(str(i).encode(), usedforsecurity=False).hexdigest()}"


async def test_a_batch_finds_its_identities_and_only_those(grown: AsyncEngine) -> None:
    numbers = range(1, GROWN + 1, GROWN // 50)
    known = {_known(i): f"cust-{i}" for i in numbers} | {("other", "email:early3"): "c3"}
    # Absent pairs whose next key in the primary key's order is another pair: the seek finds that one, and
    # the look-up must not take it (a near miss, the last identifier of a store, another store's).
    unknown = [(STORE, "anon:none"), ("other", "email:early1x"), (STORE, "zzz"), ("elsewhere", "anon:1")]
    async with grown.connect() as conn:
        found = await repository.load_identities(conn, [*known, *unknown, next(iter(known))])
    assert found == known


async def test_the_look_up_probes_the_primary_key_instead_of_reading_the_table(grown: AsyncEngine) -> None:
    keys = [_known(i) for i in range(1, 61)]
    statement = repository._LOAD_IDENTITIES_RAW
    async with grown.connect() as conn:
        plan = "\n".join(
            row[0]
            for row in await fetch(
                conn, f"EXPLAIN {statement.sql}", *statement.args(params(repository._IDENTITY_KEY, keys))
            )
        )
    assert "identities_pkey" in plan, plan
    assert "Seq Scan on identities" not in plan, plan

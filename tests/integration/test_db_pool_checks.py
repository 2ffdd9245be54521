"""The services' engine (shared.db.build_engine) checks its pooled connections without pool_pre_ping's
three round trips per checkout, and still hands out a working connection after a PostgreSQL restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import start_postgres
from shared import db
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    # One pooled connection, so every checkout below gets the same one back.
    engine = db.build_engine(DatabaseSettings(database_url=postgres_url, database_pool_size=1))
    yield engine
    await engine.dispose()


# asyncpg's ping, inside a transaction of its own (BEGIN, this, ROLLBACK).
PING = ";"


async def _statements_of_next_checkout(engine: AsyncEngine) -> list[str]:
    """The statements the driver sent outside prepared statements (the adapter's BEGIN and ROLLBACK, a
    ping's) for a checkout of the pooled connection and one SELECT on it."""
    async with engine.connect() as conn:
        driver: Any = (await conn.get_raw_connection()).driver_connection
    sent: list[str] = []
    with driver.query_logger(lambda logged: sent.append(logged.query)):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    return sent


async def test_a_connection_back_from_the_pool_costs_no_ping(engine: AsyncEngine) -> None:
    # The transaction of the SELECT only (which the adapter begins, and the pool rolls back on return).
    assert await _statements_of_next_checkout(engine) == ["BEGIN;", "ROLLBACK;"]


async def test_a_connection_idle_in_the_pool_for_long_is_pinged_first(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    sent = await _statements_of_next_checkout(engine)
    assert PING in sent, sent
    assert sent[-2:] == ["BEGIN;", "ROLLBACK;"]


async def test_after_a_postgres_restart_the_first_statement_gets_a_working_connection(
    stack_dir: Path,
) -> None:
    run_dir = stack_dir / "pg-restart"
    [port] = free_ports(1)
    server = start_postgres(run_dir, port, fast=True, die_with_parent=True)
    engine = db.build_engine(DatabaseSettings(database_url=server.url, database_pool_size=2))
    try:
        async with engine.connect() as one, engine.connect() as two:  # two connections wait in the pool
            before = {
                (await one.execute(text("SELECT pg_backend_pid()"))).scalar_one(),
                (await two.execute(text("SELECT pg_backend_pid()"))).scalar_one(),
            }
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(start_postgres, run_dir, port, fast=True, die_with_parent=True)
        # No error, no retry by the caller: the pool noticed its connections had been closed.
        for _ in range(2):
            async with engine.connect() as conn:
                backend = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert backend not in before
    finally:
        await engine.dispose()
        await asyncio.to_thread(server.stop)

"""Statements sent straight to asyncpg fail as they did through SQLAlchemy: what decides whether a failure is
an outage (shared/transient.py) sees a broken connection as transient, and a database error with its SQLSTATE
(bad data stays bad data, a deadlock stays retryable)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.notifier.adapters import raw_sql
from shared.transient import is_bad_data, is_infrastructure, is_transient

pytestmark = pytest.mark.integration

APP = "notifier-raw-sql-test"


@pytest.fixture
async def own_engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_url, connect_args={"server_settings": {"application_name": APP}})
    yield engine
    await engine.dispose()


async def test_rows_come_back_by_name_in_the_callers_transaction(own_engine: AsyncEngine) -> None:
    async with own_engine.begin() as conn:
        await conn.execute(text("CREATE TEMP TABLE t (k text, v jsonb) ON COMMIT DROP"))
        await conn.execute(text("""INSERT INTO t VALUES ('a', '{"x": 1}'), ('b', NULL)"""))
        rows = await raw_sql.fetch(
            conn, "SELECT k, v FROM t WHERE k = ANY($1::text[]) ORDER BY k", ["a", "b"]
        )
        assert [(r["k"], r["v"]) for r in rows] == [("a", {"x": 1}), ("b", None)]
        assert await raw_sql.execute(conn, "UPDATE t SET v = NULL WHERE k = $1", "a") == "UPDATE 1"


async def test_a_database_error_keeps_its_sqlstate(own_engine: AsyncEngine) -> None:
    async with own_engine.connect() as conn:
        with pytest.raises(DBAPIError) as bad:
            await raw_sql.fetch(conn, "SELECT 1 / $1::int", 0)
    assert is_bad_data(bad.value)  # 22012, division by zero: the data, not an outage
    assert not is_transient(bad.value)


async def test_a_connection_the_server_ended_is_an_outage(
    own_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    async with own_engine.connect() as conn:
        await raw_sql.fetch(conn, "SELECT 1")
        async with engine.connect() as admin:
            await admin.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"),
                {"app": APP},
            )
        with pytest.raises(raw_sql.ConnectionLost) as lost:
            await _select_until_it_fails(conn)
        await conn.invalidate()
    assert is_transient(lost.value)
    assert is_infrastructure(lost.value)


async def _select_until_it_fails(conn: AsyncConnection) -> None:
    for _ in range(3):  # the server's notice may arrive after the next statement went out
        await raw_sql.fetch(conn, "SELECT 1")


async def test_the_first_statement_of_a_transaction_runs_in_it(own_engine: AsyncEngine) -> None:
    async with own_engine.begin() as conn:
        first = await raw_sql.fetch(
            conn, "SELECT pg_current_xact_id_if_assigned() IS NULL AS none, now() AS at"
        )
        await raw_sql.fetch(conn, "SELECT txid_current()")  # assigns one, in the same transaction
        again = await raw_sql.fetch(conn, "SELECT now() AS at")
        assert first[0]["at"] == again[0]["at"]  # now() is the transaction's start: one transaction

"""shared/raw_sql.py (the segmenter's and the notifier's statements): a statement sent straight to asyncpg
runs in the caller's transaction, and a refusal by the database is raised as SQLAlchemy's execute raised it
(same class, same message and SQLSTATE, so the consumer's dead-letter reason is the same, bad data stays bad
data and a deadlock stays retryable); a broken connection is an outage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared import raw_sql
from shared.consumer import _reason
from shared.transient import is_bad_data, is_infrastructure, is_transient

pytestmark = pytest.mark.integration

APP = "shared-raw-sql-test"


@pytest.fixture
async def own_engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_url, connect_args={"server_settings": {"application_name": APP}})
    yield engine
    await engine.dispose()


async def test_a_refusal_is_raised_as_sqlalchemy_raised_it(own_engine: AsyncEngine) -> None:
    too_long = "s" * 100  # the segmenter's store ids are varchar(64)
    insert = "INSERT INTO segmenter.timers (store_id, customer_id, kind, due_at) VALUES ({}, 'c', 'k', now())"
    async with own_engine.connect() as conn:
        with pytest.raises(DBAPIError) as through_sqlalchemy:
            await conn.execute(text(insert.format(":s")), {"s": too_long})
    async with own_engine.connect() as conn:
        with pytest.raises(DBAPIError) as straight:
            await raw_sql.fetch(conn, insert.format("$1"), too_long)
    assert type(straight.value) is type(through_sqlalchemy.value)
    assert type(straight.value.orig) is type(through_sqlalchemy.value.orig)
    assert _reason(straight.value) == _reason(through_sqlalchemy.value)
    assert "value too long" in _reason(straight.value)
    assert is_bad_data(straight.value)
    assert not is_transient(straight.value)


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
    async with own_engine.connect() as conn:
        with pytest.raises(DBAPIError) as failed:
            await raw_sql.execute(conn, "SELECT 1 / $1::int", 0)
    assert is_bad_data(failed.value)


async def test_the_first_statement_of_a_transaction_runs_in_it(own_engine: AsyncEngine) -> None:
    async with own_engine.connect() as conn:
        transaction = await conn.begin()
        await raw_sql.fetch(conn, "CREATE TEMP TABLE t (k text)")
        await raw_sql.fetch(conn, "INSERT INTO t VALUES ($1)", "a")
        await transaction.rollback()
        rows = await conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 't'"))
        assert rows.scalar_one() == 0  # the rollback took the table with it: one transaction


async def test_a_read_alone_begins_nothing_and_fails_as_fetch_fails(own_engine: AsyncEngine) -> None:
    async with own_engine.connect() as conn:
        rows = await raw_sql.fetch_alone(conn, "SELECT $1::text AS k, txid_current_if_assigned() AS x", "a")
        assert [(r["k"], r["x"]) for r in rows] == [("a", None)]
        raw = await conn.get_raw_connection()
        adapted: Any = raw.dbapi_connection
        driver: Any = raw.driver_connection
        # No BEGIN was sent, so the connection goes back to the pool without a ROLLBACK.
        assert adapted._transaction is None
        assert not driver.is_in_transaction()
    async with own_engine.connect() as conn:
        with pytest.raises(DBAPIError) as alone:
            await raw_sql.fetch_alone(conn, "SELECT 1 / $1::int", 0)
    async with own_engine.connect() as conn:
        with pytest.raises(DBAPIError) as in_transaction:
            await raw_sql.fetch(conn, "SELECT 1 / $1::int", 0)
    assert type(alone.value) is type(in_transaction.value)
    assert _reason(alone.value) == _reason(in_transaction.value)
    assert is_bad_data(alone.value)
    async with own_engine.connect() as conn:
        transaction = await conn.begin()
        await raw_sql.fetch(conn, "CREATE TEMP TABLE t (k text)")
        await raw_sql.fetch_alone(conn, "INSERT INTO t VALUES ($1) RETURNING k", "a")
        await transaction.rollback()
        left = await conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 't'"))
        assert left.scalar_one() == 0  # in a transaction begun already, it runs in that transaction


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

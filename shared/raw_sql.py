"""Hot statements sent straight to asyncpg on a SQLAlchemy connection, in its transaction.

SQLAlchemy's execute costs client CPU on every statement (an execution context, parameter and result
processing, rows wrapped as Row objects); for a batch's dozen statements at steady load (batches of about
a hundred events) that is several per cent of the segmenter's CPU. asyncpg alone keeps the statements
prepared in its own cache. The segmenter sends a batch's statements after its claim here; the notifier its
planning writes, claims and outcomes (services/notifier/adapters/raw_sql.py builds their texts). A
database's refusal is raised exactly as SQLAlchemy's adapter raises it (same exception classes, same
message), so what decides whether a failure is an outage (shared/transient.py) sees the same thing, and what
the consumer logs and dead-letters with its reason does not change.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

# The connection is gone or unusable (closed, the server going down, its protocol state lost).
_CONNECTION_BROKE = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
)


class ConnectionLost(ConnectionError):
    """asyncpg's connection broke under a statement sent to it directly (an OSError: transient)."""


async def fetch(conn: AsyncConnection, sql: str, *args: object) -> list[Any]:
    """The rows (asyncpg Records: `r[0]`, `r["col"]`, `r.get`) of a statement with `$n` parameters."""
    return await _fetch(conn, sql, args, begin=True)


async def fetch_alone(conn: AsyncConnection, sql: str, *args: object) -> list[Any]:
    """`fetch` for a read that needs no transaction of its own (a read route's one query on a connection
    checked out for it): sent without the BEGIN `fetch` sends first, so PostgreSQL runs it as a transaction
    of its own, and the connection then goes back to the pool without a ROLLBACK. Two round trips fewer, the
    same rows (one statement sees one snapshot either way). In a transaction already begun it runs there."""
    return await _fetch(conn, sql, args, begin=False)


async def _fetch(conn: AsyncConnection, sql: str, args: tuple[object, ...], *, begin: bool) -> list[Any]:
    adapted, driver = await _connection(conn, begin=begin)
    try:
        rows: list[Any] = await driver.fetch(sql, *args)
    except Exception as exc:
        raise _translated(exc, sql, adapted, conn) from exc
    return rows


async def execute(conn: AsyncConnection, sql: str, *args: object) -> str:
    """The command status ("UPDATE 1") of a statement with `$n` parameters on `conn`."""
    adapted, driver = await _connection(conn)
    try:
        status: str = await driver.execute(sql, *args)
    except Exception as exc:
        raise _translated(exc, sql, adapted, conn) from exc
    return status


async def _connection(conn: AsyncConnection, *, begin: bool = True) -> tuple[Any, Any]:
    """SQLAlchemy's adapted connection and asyncpg's own beneath it, in the caller's transaction (begun
    here when none is yet, unless `begin` is false)."""
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    if begin and adapted._transaction is None:
        # SQLAlchemy's asyncpg adapter sends BEGIN only with the first statement it executes itself: a
        # statement sent straight to asyncpg first would run outside the caller's transaction (its FOR UPDATE
        # locks released at once). Begin as the adapter would (nothing on an autocommit connection).
        await adapted._start_transaction()
    return adapted, raw.driver_connection


def _translated(exc: Exception, sql: str, adapted: Any, conn: AsyncConnection) -> Exception:
    if isinstance(exc, _CONNECTION_BROKE):
        return ConnectionLost(type(exc).__name__)
    if isinstance(exc, asyncpg.PostgresError):
        # The adapter's own translation (it raises the DB-API exception it maps this error to), wrapped as
        # SQLAlchemy's execute wraps it.
        try:
            adapted._handle_exception(exc)
        except Exception as dbapi_error:  # what the adapter raised is the answer
            return DBAPIError.instance(sql, None, dbapi_error, conn.dialect.loaded_dbapi.Error)
    return exc

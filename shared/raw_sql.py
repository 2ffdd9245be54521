"""Hot statements sent straight to asyncpg on a SQLAlchemy connection, in its transaction.

SQLAlchemy's execute costs client CPU on every statement (an execution context, parameter and result
processing, rows wrapped as Row objects); for a batch's dozen statements at steady load (batches of about
a hundred events) that is several per cent of the segmenter's CPU. asyncpg alone keeps the statements
prepared in its own cache. The notifier's services/notifier/adapters/raw_sql.py does the same for its
claims; this one raises a database's refusal exactly as SQLAlchemy's adapter does (same exception classes,
same message), so what the consumer logs and dead-letters with its reason does not change.
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


async def fetch(conn: AsyncConnection, sql: str, args: list[Any]) -> list[Any]:
    """The rows (asyncpg Records: `r[0]`, `r["col"]`) of a statement with `$n` parameters on `conn`."""
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    if adapted._transaction is None:
        # SQLAlchemy's asyncpg adapter sends BEGIN only with the first statement it executes itself: a
        # statement sent straight to asyncpg first would run outside the caller's transaction. Begin as the
        # adapter would (nothing on an autocommit connection).
        await adapted._start_transaction()
    driver: Any = raw.driver_connection
    try:
        rows: list[Any] = await driver.fetch(sql, *args)
    except Exception as exc:
        raise _translated(exc, sql, adapted, conn) from exc
    return rows


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

"""A few hot statements sent straight to asyncpg on a SQLAlchemy connection (in its transaction, if any).

SQLAlchemy's execute costs more client CPU than many of the statements it sends: building the cache key,
rendering a bind for every value of an IN list, processing parameters and result rows. For the statements
run for every funnel-event batch or every message sent, asyncpg alone (its statement cache keeps them
prepared) takes a third to a quarter of that (measured: the facts of 45 customers read FOR UPDATE, 2.5-2.8 ms
of CPU through SQLAlchemy, 1.1 ms through asyncpg; one outcome UPDATE, 185 us against 45).

asyncpg's own errors are raised as SQLAlchemy would have raised them (shared/raw_sql.py): a broken connection
as a transient ConnectionError, a database error as a DBAPIError carrying its SQLSTATE (a deadlock stays
retryable, bad data stays bad data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Numeric, SmallInteger, String, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

from shared.raw_sql import ConnectionLost, execute, fetch

# The statements themselves go through shared/raw_sql.py (the segmenter's too): one translation of asyncpg's
# errors for both services.
__all__ = ["ConnectionLost", "execute", "fetch", "of_customers", "unnest_insert"]


def of_customers(table: Table, columns: Sequence[str], where: str = "", tail: str = "") -> str:
    """SELECT `columns` of `table`'s rows for the customers whose stores and ids are the arrays $1 and $2
    (one pair per customer, each pair once), `where` (conditions on the row `t`, parameters from $3) and
    `tail` (ORDER BY, FOR UPDATE OF t) added.

    A join on the pairs, not `store_id = ANY($1) AND customer_id = ANY($2)`: PostgreSQL looks each pair up in
    the (store_id, customer_id) index whatever its statistics say. With ANY and a fresh database's missing
    statistics it took store_id alone as the index condition and read every row of the store (the
    benchmark's end-to-end run, one store: 57 ms for the facts of 110 customers, 34 ms for recent sends),
    and a generic plan cached while the table was empty kept a sequential scan (measured on PostgreSQL 15
    with 28,000 customers: 0.3-0.6 ms by the pairs' join either way)."""
    selected = ", ".join(f"t.{name}" for name in columns)
    conditions = f" WHERE {where}" if where else ""
    return (
        f"SELECT {selected} FROM {table.fullname} t "  # noqa: S608
        "JOIN unnest($1::text[], $2::text[]) AS wanted (store_id, customer_id) "
        f"ON t.store_id = wanted.store_id AND t.customer_id = wanted.customer_id{conditions}"
        + (f" {tail}" if tail else "")
    )


def unnest_insert(table: Table, columns: Sequence[str], conflict: ClauseElement) -> str:
    """The text of `conflict` (an INSERT ... ON CONFLICT [RETURNING] built with SQLAlchemy, so its clauses
    are written once) taking its rows from one array parameter per column, $1 to $n in `columns` order,
    inserted in the arrays' order; a JSONB column's array holds each value as JSON text.

    One statement and one bind per column whatever the batch, where SQLAlchemy's executemany renders and
    processes a bind per value (and the rows' dicts) on every call. The conflict clause must have no bind
    parameters of its own (it may only refer to `excluded` and the table's columns)."""
    compiled = str(conflict.compile(dialect=_DIALECT))
    _, found, tail = compiled.partition(" ON CONFLICT ")
    if not found or "$" in tail:
        raise ValueError(f"not an ON CONFLICT statement without parameters: {compiled}")
    arrays = ", ".join(f"${i}::{_array_type(table.c[name].type)}[]" for i, name in enumerate(columns, 1))
    values = ", ".join(
        f"{name}::jsonb" if isinstance(table.c[name].type, JSONB) else name for name in columns
    )
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table.fullname} ({names}) SELECT {values} "  # noqa: S608
        f"FROM unnest({arrays}) WITH ORDINALITY AS batch ({names}, batch_order) ORDER BY batch_order "
        f"ON CONFLICT {tail}"
    )


_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialects are untyped


def _array_type(column_type: TypeEngine[Any]) -> str:
    """A column's type for its parameter array, without a length: a value too long for the column fails on
    assignment, as a bound VARCHAR did, where a cast to varchar(n) would cut it."""
    if isinstance(column_type, JSONB):
        return "text"
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    if isinstance(column_type, Numeric):
        return "numeric"
    if isinstance(column_type, (BigInteger, Integer, SmallInteger)):
        return {BigInteger: "bigint", SmallInteger: "smallint"}.get(type(column_type), "integer")
    if isinstance(column_type, String):
        return "varchar"
    raise TypeError(f"no array type for {column_type!r}")

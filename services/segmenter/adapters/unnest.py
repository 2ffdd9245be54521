"""Statements that take a batch of rows as one array per column (`unnest`), built from the Table objects.

The statement text never changes with the batch size, so Postgres plans it once per connection, and a
batch of 1,000 events costs one round trip per table instead of a multi-row VALUES list compiled anew each
time (or one for several tables: `joined`). Each array's type comes from its column; parameters are named
after the columns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, LargeBinary, Numeric, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.expression import text
from sqlalchemy.types import TypeEngine

# The array element type per column type. JSONB travels as text (a document serialised once, by pydantic)
# and is cast back in the SELECT list.
_ARRAY_OF: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (BigInteger, "bigint"),
    (Integer, "integer"),
    (Numeric, "numeric"),
    (DateTime, "timestamptz"),
    (Boolean, "boolean"),
    (LargeBinary, "bytea"),
    (JSONB, "text"),
    (String, "text"),
    (Text, "text"),
)


def _element_type(table: Table, column: str) -> str:
    kind = table.c[column].type
    for python_type, sql in _ARRAY_OF:
        if isinstance(kind, python_type):
            return sql
    raise TypeError(f"no array type for {table.name}.{column} ({kind!r})")


def unnest(table: Table, columns: Sequence[str], alias: str, *, ordinal: bool = False) -> str:
    """`unnest(CAST(:a AS text[]), ...) AS alias(a, ...)` for these columns of the table; with `ordinal`,
    a last column `n` numbers the rows in the order given."""
    arrays = ", ".join(f"CAST(:{c} AS {_element_type(table, c)}[])" for c in columns)
    names = ", ".join((*columns, "n") if ordinal else columns)
    return f"unnest({arrays}){' WITH ORDINALITY' if ordinal else ''} AS {alias}({names})"


def insert_rows(
    table: Table, columns: Sequence[str], on_conflict: str = "", *, ordered: bool = False
) -> TextClause:
    """INSERT of a batch of rows into these columns; `ordered` keeps the order given (identity columns
    then follow it). `on_conflict`: the statement's ON CONFLICT (and RETURNING) clause, if any."""
    selected = ", ".join(f"{c}::jsonb" if isinstance(table.c[c].type, JSONB) else c for c in columns)
    statement = (
        f"INSERT INTO {table.fullname} ({', '.join(columns)}) "  # noqa: S608 - names from our own tables
        f"SELECT {selected} FROM {unnest(table, columns, 'r', ordinal=ordered)}"
    )
    if ordered:
        statement += " ORDER BY n"
    if on_conflict:
        statement += f" {on_conflict}"
    return text(statement)


def params(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """Rows -> the statement's parameters: one list per column."""
    if not rows:
        return {c: [] for c in columns}
    return dict(zip(columns, (list(col) for col in zip(*rows, strict=True)), strict=True))


# A bind `:name`, not the second colon of a cast (`::jsonb`).
_BIND = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Positional:
    """A statement's text with asyncpg's `$n` parameters in place of its `:name` ones (shared/raw_sql.py),
    and the names in the order of their numbers. `parts`: the data-modifying statements it runs, when it
    was made of several (`positional`), each numbered as in `sql`; otherwise `sql` alone."""

    sql: str
    names: tuple[str, ...]
    parts: tuple[str, ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


def positional(*statements: TextClause | str) -> Positional:
    """One statement, or several data-modifying ones made one (`chained`), with `$n` parameters: each
    named bind gets one number, in the order of first use."""
    names: list[str] = []

    def number(bind: re.Match[str]) -> str:
        name = bind.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    parts = tuple(_BIND.sub(number, s.text if isinstance(s, TextClause) else s) for s in statements)
    return Positional(chained(parts), tuple(names), parts)


def chained(parts: Sequence[str]) -> str:
    """Data-modifying statements (none with a WITH of its own) as one: every part but the last becomes a
    WITH of the last. PostgreSQL runs each to completion, and each sees the rows as they stood when the
    statement began, never another part's changes: right for parts that touch tables of their own, or
    rows the others do not."""
    *before, last = parts
    if not before:
        return last
    return "WITH " + ", ".join(f"w{i} AS ({part})" for i, part in enumerate(before)) + " " + last


# A parameter of a positional statement (our statements hold no other `$`).
_NUMBER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=256)
def joined(statements: tuple[Positional, ...]) -> Positional:
    """These statements as one (`chained`): their parameters numbered one after another, each statement's
    names prefixed by its place (`0.store_id`, `1.store_id`: the values of `joined_values`). The same
    statements give the same text, so asyncpg prepares it once."""
    parts: list[str] = []
    names: list[str] = []
    for i, statement in enumerate(statements):
        offset = len(names)
        parts.extend([_renumbered(part, offset) for part in statement.parts])
        names.extend(f"{i}.{name}" for name in statement.names)
    return Positional(chained(parts), tuple(names), tuple(parts))


def _renumbered(sql: str, offset: int) -> str:
    return _NUMBER.sub(lambda n: f"${int(n.group(1)) + offset}", sql)


def joined_values(values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The values of `joined` statements, given in the same order."""
    return {f"{i}.{name}": value for i, each in enumerate(values) for name, value in each.items()}

"""Statements that take a batch of rows as one array per column (`unnest`), built from the Table objects.

The statement text never changes with the batch size, so Postgres plans it once per connection, and a
batch of 1,000 events costs one round trip per table instead of a multi-row VALUES list compiled anew each
time (or one for several tables: `joined`). Each array's type comes from its column; parameters are named
after the columns.

Each array travels as one text parameter holding PostgreSQL's array literal (`literal`), cast to its
array type in the statement (`array`), as pgbench sends the same statements' arrays (bench/limits.py). Sent
as lists, asyncpg encodes every element on its own after checking whether it is itself an array (two
`isinstance` checks against abstract classes, each a Python call): 130-280 ns of the client's CPU an element
for a NULL, an integer or a text, 640 for a timestamp, 950 for a numeric; msgspec writes the literal at
4-50 ns an element. Reading the literal costs PostgreSQL more than receiving the binary array (20-70 ns
more an element, 280 for a timestamp), less than the client saves; but it reads a literal character by
character, and for a profile's document (1-2 kB, its quotes escaped) that cost more than asyncpg's encoding.
Replaying the benchmark's mix (4.1 million elements; 3 alternated pairs): the client's CPU 10.51 -> 9.39 s
at the medians, PostgreSQL's 7.88 -> 8.40, the replay 13.07 -> 12.29 s.

A JSONB column's documents and a bytea column's bytes (`as_blobs`) travel as one bytea parameter, their
bytes one after another (`blob`; `encoded_blob` as they are encoded), with two integer literals
(`<column>__at`, `<column>__len`) saying where each row's are; the statement cuts them out (`substring`, a
copy of the row's bytes; a document is then read as UTF-8 text, which PostgreSQL checks as it checks any
text it receives). Sent as lists, asyncpg wrote each document or value into its bind buffer on its own, and
that buffer grows only 1 KiB past what each write needs (asyncpg 0.32's `WriteBuffer`): nearly every
document reallocated it, often a copy of the whole batch's message so far (1.2 billion instructions over
the replay of 200,000 events), besides the two `isinstance` checks an element. One parameter is one write.
pgbench, which sends every parameter as text, had read the outbox's bytes as a literal of hex-escaped
elements (which asyncpg's binary arrays never cost the segmenter): its outbox statement halved too
(bench/README.md, the fifty-fourth round).

PostgreSQL plans with the array's length as before (a custom plan reads the literal: EXPLAIN of the
profile reads gives the batch's 3,000 rows).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
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


def array(name: str, element: str) -> str:
    """The parameter `name` as an array of `element`s: its literal (`literal`) cast to the array type."""
    return f"CAST(CAST(:{name} AS text) AS {element}[])"


def as_blobs(table: Table, columns: Sequence[str]) -> tuple[str, ...]:
    """Those of these columns whose values travel as one blob (`blob`), not a literal: a JSONB column's
    documents (a literal of them costs PostgreSQL more, its quotes escaped) and a bytea column's bytes (a
    literal would spell every byte out twice)."""
    return tuple(c for c in columns if isinstance(table.c[c].type, JSONB | LargeBinary))


def parameters(table: Table, columns: Sequence[str]) -> tuple[str, ...]:
    """The parameters of an `unnest` of these columns: each column's, and a blob's places after it."""
    blobs = as_blobs(table, columns)
    return tuple(p for c in columns for p in ((c, f"{c}__at", f"{c}__len") if c in blobs else (c,)))


def _cut(table: Table, column: str) -> str:
    # Each row's bytes out of the blob; a document as text (checked as UTF-8), which the statement casts.
    cut = f"substring(b.{column} FROM u.{column}__at FOR u.{column}__len)"
    return f"convert_from({cut}, 'UTF8')" if isinstance(table.c[column].type, JSONB) else cut


def unnest(table: Table, columns: Sequence[str], alias: str, *, ordinal: bool = False) -> str:
    """`unnest(<array :a>, ...) AS alias(a, ...)` for these columns of the table (`array`), those of
    `as_blobs` cut out of their blob by a subquery of the same alias and columns; with `ordinal`, a last
    column `n` numbers the rows in the order given."""
    blobs = as_blobs(table, columns)
    names = [p for p in parameters(table, columns) if p not in blobs]
    arrays = ", ".join(array(p, "integer" if p not in columns else _element_type(table, p)) for p in names)
    if ordinal:
        names.append("n")
    rows = f"unnest({arrays}){' WITH ORDINALITY' if ordinal else ''}"
    if not blobs:
        return f"{rows} AS {alias}({', '.join(names)})"
    # A subquery that PostgreSQL pulls up into the statement: each row's cut made once. The blobs are named
    # after the arrays, so that asyncpg writes them last into its bind message (parameters are numbered in
    # the order of first use): each later parameter that grows the message copies it.
    cuts = ", ".join(f"{_cut(table, c)} AS {c}" if c in blobs else f"u.{c}" for c in columns)
    blob_values = ", ".join(f"CAST(:{c} AS bytea)" for c in blobs)
    return (
        f"(SELECT {cuts}{', u.n' if ordinal else ''} FROM {rows} AS u({', '.join(names)}), "  # noqa: S608
        f"(SELECT {blob_values}) AS b({', '.join(blobs)})) AS {alias}"
    )


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


def params(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, str]:
    """Rows -> the statement's parameters: one array literal per column (`literal`). A blob column's
    parameters come from `blob` or `encoded_blob`."""
    cols = zip(*rows, strict=True) if rows else ((),) * len(columns)
    return {c: literal(col) for c, col in zip(columns, cols, strict=True)}


def blob(column: str, values: Sequence[bytes]) -> dict[str, str | bytes]:
    """A blob column's parameters: these values' bytes one after another, and where each begins (from 1,
    as `substring` counts) and how long it is, as integer literals."""
    lengths = [len(v) for v in values]
    starts = list(itertools.accumulate(lengths, initial=1))
    starts.pop()
    return {column: b"".join(values), f"{column}__at": literal(starts), f"{column}__len": literal(lengths)}


def encoded_blob(
    column: str, values: Iterable[Any], encode_into: Callable[[Any, bytearray, int], None]
) -> dict[str, str | bytes]:
    """`blob` of these values as `encode_into` (a msgspec encoder's) writes them. Each is written at the
    start of one scratch buffer, copied out and joined: the scratch keeps its allocation from one value to
    the next (msgspec sets its length, not its size), so it grows only for a value longer than any before.
    Appended one after another to the blob's own buffer, as they were, each value asked to grow the blob
    (msgspec asks for 1.5 times what it needs beyond the bytearray's length, not its allocation), and one
    in 30 reallocated it, copying the blob so far: 6,917 copies of about 150 kB over the replay of 200,000
    events. Encoded one by one with `encode`, each began in msgspec's first 512 bytes and grew several
    times for a 1-3 kB document (bench/README.md, rounds 55 and 57)."""
    scratch = bytearray()
    encoded: list[bytes] = []
    for value in values:
        encode_into(value, scratch, 0)
        encoded.append(bytes(scratch))
    return blob(column, encoded)


# msgspec's JSON of a list is PostgreSQL's array literal but for its brackets: `null` is an unquoted NULL
# there too, numbers and booleans are read by their types' input functions, and a string is quoted with
# `"` and `\` escaped by a backslash, as both write it. A decimal, a timestamp (RFC 3339, its offset
# included) and a StrEnum's value are strings. The one difference: JSON escapes a control character
# (`\n`, `\u0001`), which the literal would read as the letter; a string holding one is quoted here.
_JSON = msgspec.json.Encoder(decimal_format="string")
_CONTROL_ESCAPE = re.compile(rb"\\[bfnrtu]")


def literal(values: Sequence[Any]) -> str:
    """PostgreSQL's array literal of these values (None, str, int, bool, Decimal, aware datetime). A
    datetime's offset is written in whole minutes, RFC 3339's: every instant the segmenter holds has one
    (msgspec and pydantic read no other, and `instants.standard` keeps it)."""
    encoded = _JSON.encode(values)
    # Most batches hold no backslash at all (one search of the bytes); a document's quotes are escaped,
    # and only then is it worth looking for a control character's escape. A false alarm (a backslash
    # followed by one of these letters in the text itself) only takes the slower way.
    if b"\\" in encoded and _CONTROL_ESCAPE.search(encoded) is not None:
        return "{" + ",".join(_element(v) for v in values) + "}"
    return "{" + encoded[1:-1].decode() + "}"


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        # Inside the quotes every character stands for itself but these two.
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _JSON.encode(value).decode()


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

"""The segmenter's statements with asyncpg's `$n` parameters (adapters/unnest.py, positional): each named
bind gets one number, in the order of first use, and casts (`::jsonb`) are left alone."""

from __future__ import annotations

from services.segmenter.adapters import repository
from services.segmenter.adapters.unnest import joined, joined_values, positional


def test_binds_are_numbered_in_order_of_first_use_and_casts_kept() -> None:
    converted = positional("SELECT CAST(:a AS text[]), :b::jsonb, x::text, CAST(:a AS int) FROM t")
    assert converted.sql == "SELECT CAST($1 AS text[]), $2::jsonb, x::text, CAST($1 AS int) FROM t"
    assert converted.names == ("a", "b")
    assert converted.args({"b": 2, "a": 1, "unused": 3}) == [1, 2]


def test_the_profile_upsert_takes_its_columns_in_order() -> None:
    converted = positional(repository._SAVE_PROFILES)
    # The document's blob last, after its places (unnest.blob): asyncpg writes the parameters in order.
    assert converted.names == (*repository._PROFILE[:-1], "facts__at", "facts__len", "facts")
    assert "facts::jsonb" in converted.sql
    assert ":" not in converted.sql.replace("::", "")


def test_several_statements_become_one_the_first_ones_as_its_withs() -> None:
    converted = positional("DELETE FROM t WHERE a = ANY(:a)", "INSERT INTO t SELECT unnest(:b), :a")
    assert converted.parts == ("DELETE FROM t WHERE a = ANY($1)", "INSERT INTO t SELECT unnest($2), $1")
    assert converted.sql == "WITH w0 AS (DELETE FROM t WHERE a = ANY($1)) INSERT INTO t SELECT unnest($2), $1"
    assert converted.names == ("a", "b")


def test_joined_statements_number_their_parameters_one_after_another() -> None:
    first = positional("DELETE FROM t WHERE a = ANY(:a)", "INSERT INTO t SELECT unnest(:b), :a")
    wide = positional("INSERT INTO u SELECT " + ", ".join(f":c{n}" for n in range(11)))
    both = joined((first, wide))
    assert both.parts[:2] == first.parts
    assert both.parts[2] == "INSERT INTO u SELECT " + ", ".join(f"${n + 3}" for n in range(11))
    assert both.sql.startswith("WITH w0 AS (DELETE FROM t WHERE a = ANY($1)), w1 AS (INSERT INTO t ")
    assert both.sql.endswith(") INSERT INTO u SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13")
    values = joined_values([{"b": "B", "a": "A"}, {f"c{n}": n for n in range(11)}])
    assert both.args(values) == ["A", "B", *range(11)]

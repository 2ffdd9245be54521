"""The segmenter's statements with asyncpg's `$n` parameters (adapters/unnest.py, positional): each named
bind gets one number, in the order of first use, and casts (`::jsonb`) are left alone."""

from __future__ import annotations

from services.segmenter.adapters import repository
from services.segmenter.adapters.unnest import positional


def test_binds_are_numbered_in_order_of_first_use_and_casts_kept() -> None:
    converted = positional("SELECT CAST(:a AS text[]), :b::jsonb, x::text, CAST(:a AS int) FROM t")
    assert converted.sql == "SELECT CAST($1 AS text[]), $2::jsonb, x::text, CAST($1 AS int) FROM t"
    assert converted.names == ("a", "b")
    assert converted.args({"b": 2, "a": 1, "unused": 3}) == [1, 2]


def test_the_profile_upsert_takes_its_columns_in_order() -> None:
    converted = positional(repository._SAVE_PROFILES)
    assert converted.names == repository._PROFILE
    assert "facts::jsonb" in converted.sql
    assert ":" not in converted.sql.replace("::", "")

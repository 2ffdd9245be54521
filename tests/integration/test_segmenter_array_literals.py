"""The segmenter's array parameters as PostgreSQL's array literals (adapters/unnest.py, `literal`): what
PostgreSQL reads back from a literal is exactly the list it was written from, for every kind of value the
segmenter's statements carry, and for any text at all (generated): quotes, backslashes, braces, commas,
spaces at either end, the word NULL, control characters (JSON's escapes, which the literal must not keep)
and letters beyond ASCII. Real PostgreSQL, through the same cast (`array`) the statements use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.segmenter.adapters import repository
from services.segmenter.adapters.unnest import array, literal, params, positional
from shared import raw_sql
from shared.funnel import LoyaltyStage
from tests.integration.accepted_pipeline import property_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_url)
    yield engine
    await engine.dispose()


async def read_back(engine: AsyncEngine, values: list[Any], element: str) -> list[Any]:
    statement = positional(f"SELECT {array('v', element)} AS v")
    async with engine.connect() as conn:
        (row,) = await raw_sql.fetch(conn, statement.sql, *statement.args({"v": literal(values)}))
    result: list[Any] = row["v"]
    return result


TRICKY_TEXTS = [
    "", "NULL", "null", " lead", "trail ", "a,b", "{x}", "[y]", 'q"uote', "back\\slash", "\\", '\\"',
    "new\nline", "tab\t", "\x01\x1f", "cr\r", "\\n is no newline", "é ü 中文 😀", "\u2028\u2029\x7f",
    '{"doc": "with \\"quotes\\" and a \\n", "n": [1, 2]}',
]  # fmt: skip


@pytest.mark.parametrize("with_control", [False, True])
async def test_texts_come_back_as_they_were(engine: AsyncEngine, with_control: bool) -> None:
    # Without a control character the literal is msgspec's own JSON; with one, each string quoted here.
    values: list[Any] = [t for t in TRICKY_TEXTS if with_control or not any(ord(c) < 0x20 for c in t)]
    values += [None, "x", None]
    assert await read_back(engine, values, "text") == values


# Any text a column can hold: PostgreSQL's text holds no NUL, UTF-8 no lone surrogate (a list sent the old
# way is refused for either too).
TEXTS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@property_settings(200, False)
@given(values=st.lists(st.one_of(st.none(), TEXTS)))
async def test_any_text_comes_back_as_it_was(engine: AsyncEngine, values: list[str | None]) -> None:
    assert await read_back(engine, values, "text") == values


async def test_every_kind_of_value_the_statements_carry_comes_back(engine: AsyncEngine) -> None:
    assert await read_back(engine, [], "text") == []
    integers = [0, -1, 2**63 - 1, -(2**63), None]
    assert await read_back(engine, integers, "bigint") == integers
    assert await read_back(engine, [1, None, -(2**31)], "integer") == [1, None, -(2**31)]
    assert await read_back(engine, [True, False, None], "boolean") == [True, False, None]
    amounts = [Decimal("0"), Decimal("-0.01"), Decimal("99999999999.99"), Decimal("1E+2"), None]
    assert await read_back(engine, amounts, "numeric") == amounts
    instants = [
        datetime(2026, 12, 4, 15, 0, 0, 123456, tzinfo=UTC),
        datetime(1, 1, 1, 14, tzinfo=timezone(timedelta(hours=14))),  # year 1, the day before in UTC
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=12, minutes=30))),
        None,
    ]
    assert await read_back(engine, instants, "timestamptz") == instants  # the same instants
    # A StrEnum member is written as its value (the profile's stage, health and survey level).
    assert await read_back(engine, [LoyaltyStage.REPEAT], "text") == [LoyaltyStage.REPEAT.value]


def test_a_literal_is_msgspecs_json_but_for_its_brackets() -> None:
    assert literal(["a", None, 1]) == '{"a",null,1}'
    assert literal([]) == "{}"
    # A control character's JSON escape would be read as the letter: such a batch quotes each string here.
    assert literal(["a\nb", None, 'q"']) == '{"a\nb",NULL,"q\\""}'


def test_documents_and_bytes_stay_lists() -> None:
    # PostgreSQL reads a literal character by character: a profile's document (1-2 kB, its quotes escaped)
    # costs it more so than asyncpg's binary array costs the client.
    upsert = repository._SAVE_PROFILES.text
    assert "CAST(:facts AS text[])" in upsert
    assert "CAST(CAST(:email AS text) AS text[])" in upsert
    assert "CAST(:value AS bytea[])" in repository._ADD_TO_OUTBOX.text
    rows = [("demo", "c1", "{}"), ("demo", "c2", '{"a": 1}')]
    sent = params(("store_id", "customer_id", "facts"), rows, lists=("facts",))
    assert sent == {"store_id": '{"demo","demo"}', "customer_id": '{"c1","c2"}', "facts": ["{}", '{"a": 1}']}
    assert params(("a", "b"), [], lists=("b",)) == {"a": "{}", "b": []}

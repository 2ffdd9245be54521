"""The segmenter's array parameters as PostgreSQL's array literals (adapters/unnest.py, `literal`): what
PostgreSQL reads back from a literal is exactly the list it was written from, for every kind of value the
segmenter's statements carry, and for any text at all (generated): quotes, backslashes, braces, commas,
spaces at either end, the word NULL, control characters (JSON's escapes, which the literal must not keep)
and letters beyond ASCII. Real PostgreSQL, through the same cast (`array`) the statements use. A profile's
documents and the outbox's bytes travel as one blob a column (`blob`): any bytes, and any document, are
cut out of it as they were sent, and values encoded into one (`encoded_blob`) each as its own encoding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.segmenter.adapters import repository
from services.segmenter.adapters.tables import outbox, profiles
from services.segmenter.adapters.unnest import (
    array,
    blob,
    encoded_blob,
    literal,
    params,
    positional,
    unnest,
)
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


def test_documents_and_bytes_travel_as_one_blob_written_after_the_arrays() -> None:
    # A profile's document and the outbox's keys and values: one bytea parameter each, with their places as
    # integer literals, numbered after every array (asyncpg writes parameters in their order).
    upsert = repository._SAVE_PROFILES.text
    assert "CAST(:facts AS bytea)" in upsert
    assert "CAST(CAST(:facts__at AS text) AS integer[])" in upsert
    assert "CAST(CAST(:email AS text) AS text[])" in upsert
    assert repository._SAVE_PROFILES_RAW.names[-3:] == ("facts__at", "facts__len", "facts")
    assert repository._ADD_TO_OUTBOX_RAW.names[-2:] == ("key", "value")
    sent = {
        **params(("store_id", "customer_id"), [("demo", "c1"), ("demo", "c2")]),
        **blob("facts", [b"{}", b'{"a": 1}']),
    }
    assert sent == {
        "store_id": '{"demo","demo"}',
        "customer_id": '{"c1","c2"}',
        "facts": b'{}{"a": 1}',
        "facts__at": "{1,3}",
        "facts__len": "{2,8}",
    }
    assert {**params(("a",), []), **blob("b", [])} == {"a": "{}", "b": b"", "b__at": "{}", "b__len": "{}"}
    # Encoded into the blob, the same parameters.
    encoded = encoded_blob("facts", [{}, {"a": 1}], msgspec.json.Encoder().encode_into)
    assert encoded == {"facts": b'{}{"a":1}', "facts__at": "{1,3}", "facts__len": "{2,7}"}


_OUTBOX = ("topic", "key", "value")
_OUTBOX_ROWS = positional(f"SELECT key, value FROM {unnest(outbox, _OUTBOX, 'r', ordinal=True)} ORDER BY n")


@property_settings(100, False)
@given(values=st.lists(st.binary(max_size=3000)))
async def test_any_bytes_come_back_from_their_blob_as_they_were(
    engine: AsyncEngine, values: list[bytes]
) -> None:
    # Empty values, NUL bytes, any byte at all, in order; the keys reversed so that two blobs are cut apart.
    sent = {"topic": literal(["funnel-events"] * len(values)), **blob("key", [v[::-1] for v in values])}
    sent |= blob("value", values)
    async with engine.connect() as conn:
        got = await raw_sql.fetch(conn, _OUTBOX_ROWS.sql, *_OUTBOX_ROWS.args(sent))
    assert [(r["key"], r["value"]) for r in got] == [(v[::-1], v) for v in values]


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=12), inner, max_size=8),
    max_leaves=40,
)


@property_settings(60, False)
@given(values=st.lists(_JSON_VALUES, max_size=40))
async def test_values_encoded_into_one_blob_come_back_each_as_its_own_encoding(
    engine: AsyncEngine, values: list[Any]
) -> None:
    # `encoded_blob` appends each value's JSON to one buffer (the profiles' documents, the outbox's values):
    # each row cut out of it is that value's JSON alone, the bytes `encode` gives, in order.
    encoder = msgspec.json.Encoder()
    keys = [b"k%d" % i for i in range(len(values))]
    sent = {
        "topic": literal(["funnel-events"] * len(values)),
        **blob("key", keys),
        **encoded_blob("value", values, encoder.encode_into),
    }
    async with engine.connect() as conn:
        got = await raw_sql.fetch(conn, _OUTBOX_ROWS.sql, *_OUTBOX_ROWS.args(sent))
    assert [(r["key"], r["value"]) for r in got] == list(zip(keys, map(encoder.encode, values), strict=True))


async def test_documents_come_back_from_their_blob_as_they_were(engine: AsyncEngine) -> None:
    documents = [
        "{}",
        '{"name": "é ü 中文 😀", "note": "q\\"uote, back\\\\slash, new\\nline, \\u0001"}',
        '{"n": [1, 2.50, null, true], "nested": {"a": {"b": []}}}',
        '{"long": "' + "x" * 5000 + '"}',
    ]
    columns = ("store_id", "customer_id", "facts")
    statement = positional(
        f"SELECT facts::jsonb AS facts FROM {unnest(profiles, columns, 'r', ordinal=True)} ORDER BY n"
    )
    keys = params(("store_id", "customer_id"), [("demo", f"c{i}") for i in range(len(documents))])
    sent = {**keys, **blob("facts", [d.encode() for d in documents])}
    async with engine.connect() as conn:
        got = await raw_sql.fetch(conn, statement.sql, *statement.args(sent))
    assert [r["facts"] for r in got] == [json.loads(d) for d in documents]

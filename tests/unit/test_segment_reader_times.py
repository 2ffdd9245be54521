"""Segment's usual timestamps (toISOString's `2026-11-21T10:10:40.012Z`) are read by the standard
library, every other form by pydantic-core as the models read them: the same instant and offset, or the
same refusal."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from services.ingest.sources import segment_reader as r


def _read(read: Any, value: str) -> tuple[Any, ...]:
    try:
        result = read(value)
    except (r.Invalid, ValueError):
        return ("refused", None)
    return ("read", result, result.utcoffset())


def _by_pydantic(value: str) -> Any:
    return r._adapted(r._TIMESTAMP, value, "timestamp")


DIGITS = st.text(st.sampled_from("0123456789"), min_size=1, max_size=4)
ISO_LIKE = st.tuples(
    DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, st.sampled_from(["", ".", "."]), DIGITS
).map(lambda p: f"{p[0]}-{p[1]}-{p[2]}T{p[3]}:{p[4]}:{p[5]}{p[6]}{p[7] if p[6] else ''}Z")


@given(
    value=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    | st.datetimes().map(lambda d: d.isoformat(timespec="microseconds") + "Z")
    | st.datetimes().map(lambda d: d.isoformat(timespec="seconds") + "Z")
    | ISO_LIKE
)
@example(value="2026-11-21T23:59:60.000Z")
@example(value="2026-02-29T10:00:00Z")
@example(value="2024-02-29T10:00:00.999999Z")
@example(value="0000-01-01T00:00:00.000Z")
@example(value="2026-11-21T24:00:00.000Z")
@example(value="2026-11-21T10:10:40.1234Z")
def test_the_usual_form_reads_as_pydantic_reads_it(value: str) -> None:
    assert _read(lambda v: r.timestamp(v, "timestamp"), value) == _read(_by_pydantic, value)


def test_the_usual_form_is_on_the_standard_utc() -> None:
    read = r.timestamp("2026-11-21T10:10:40.012Z", "timestamp")
    assert read is not None
    assert read.tzinfo is UTC
    assert read == datetime(2026, 11, 21, 10, 10, 40, 12000, tzinfo=UTC)
    assert read.utcoffset() == timedelta(0)


# The usual form as the expression the reader matched it with before (r.usual_time is a faster test of it).
ISO_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}|\.[0-9]{6})?Z")
NEAR_DIGITS = st.sampled_from("0123456789٣５²")
NEAR = st.lists(NEAR_DIGITS | st.sampled_from("-T:.Zzt +") | st.characters(), min_size=18, max_size=28).map(
    "".join
)


@given(
    value=st.from_regex(ISO_UTC, fullmatch=True)
    | ISO_LIKE
    | NEAR
    | st.from_regex(ISO_UTC, fullmatch=True).flatmap(
        lambda v: st.tuples(st.integers(0, len(v) - 1), NEAR_DIGITS | st.characters()).map(
            lambda change: v[: change[0]] + change[1] + v[change[0] + 1 :]
        )
    )
    | st.text(max_size=30)
)
@example(value="2026-11-21T10:10:40.012Z")
@example(value="2026-11-21T10:10:40Z")
@example(value="2026-11-21T10:10:40.012345Z")
@example(value="2026-11-21T10:10:40.0123Z")
@example(value="2026-11-21T10:10:40.012Z\n")
@example(value="2026-11-21T10:10:4٣.012Z")
@example(value="2026-11-21t10:10:40.012Z")
def test_the_usual_form_is_told_as_the_expression_tells_it(value: str) -> None:
    assert r.usual_time(value) == (ISO_UTC.fullmatch(value) is not None)

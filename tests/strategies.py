"""Hypothesis strategies for the values the segmenter's documents and funnel events hold, shared by the tests
that compare two encoders of them byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st
from pydantic_core import TzInfo

# UTC, offsets either side of it, and pydantic's own TzInfo (what a decoded contract's datetimes carry).
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=3)),
                         TzInfo(0), TzInfo(-7200)])  # fmt: skip
INSTANTS = st.builds(
    lambda at, zone: at.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    ZONES,
)
MONEY = st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15)

"""Whatever ingest accepts, the segmenter can decide, its timers can fire, and the notifier can plan and send
what it announces: a property, through ingest's real Segment routes (an app on a publisher that keeps the
bytes Kafka would get), the segmenter's own decoder (`decode_decidable`), `FunnelProcessor` and its
`TimerWorker`, then the notifier's planner and sender, on a real PostgreSQL and SMTP server.

Calls are generated at the edges a caller controls: `timestamp` anywhere from year 1 to two days ahead at any
offset, birthdays in any year, amounts and quantities up to the limits, ids shared between calls so that
profiles merge. Ingest may refuse a call (4xx, never a 5xx); what it accepts must be decoded, decided and its
timers fired (three years on) without an error, and every accepted event recorded as processed; the funnel
events that came of it planned and sent, no message failed. This is how
round 19 found a Segment identify dated in year 1 stopping the segmenter (see the README's dead letters).

SEGMENT_PROPERTY_EXAMPLES sets the number of examples (default 100, about half a minute); they are the same
on every run (derandomized) so that `make test` is repeatable; SEGMENT_PROPERTY_RANDOM=1 searches for new
ones."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.stack import SmtpServer
from tests.integration.accepted_pipeline import (
    KeepingPublisher,
    decide_and_send,
    keeping_ingest,
    property_settings,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
BASIC = {"Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode()}
EXAMPLES = int(os.environ.get("SEGMENT_PROPERTY_EXAMPLES", "100"))
RANDOM = os.environ.get("SEGMENT_PROPERTY_RANDOM") == "1"


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))])
# Mostly recent, also back to year 1 and at the ends of the calendar, where date arithmetic fails.
INSTANTS = st.one_of(
    st.sampled_from([datetime(1, 1, 1, 14), datetime(1, 1, 2), datetime(1969, 12, 31, 23, 59, 59)]),
    st.integers(min_value=0, max_value=3600).map(lambda s: (NOW - timedelta(seconds=s)).replace(tzinfo=None)),
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=(NOW + timedelta(days=2)).replace(tzinfo=None)),
    st.datetimes(min_value=datetime(1, 1, 1, 14), max_value=datetime(1971, 1, 1)),
)
TIMES = st.builds(lambda at, zone: at.replace(tzinfo=UTC).astimezone(zone).isoformat(), INSTANTS, ZONES)
AMOUNTS = st.one_of(
    st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["0", "0.001", "99999999999.99", "-1"]),
)
QUANTITIES = st.one_of(st.integers(min_value=-1, max_value=2_000_000), st.sampled_from([1, 2]))
PRODUCTS = st.fixed_dictionaries(
    {"product_id": st.sampled_from(["p1", "p2"]), "price": AMOUNTS, "quantity": QUANTITIES}
)
WHO = st.fixed_dictionaries(
    {},
    optional={
        "userId": st.sampled_from(["u1", "u2"]),
        "anonymousId": st.sampled_from(["a1", "a2"]),
    },
)
TRAITS = st.fixed_dictionaries(
    {"email": st.sampled_from(["ann@example.com", "bo@example.com"])},
    optional={
        "birthday": st.one_of(
            st.sampled_from([date(1990, 1, 3), date(2000, 1, 1), date(2000, 2, 29), date(9999, 12, 31)]),
            st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
        ).map(date.isoformat),
        "createdAt": TIMES,
        "firstName": st.sampled_from(["Ann", "Bo", "Zoë", "Ann\r\nBcc: eve@evil.example", "  ", "名前"]),
        "phone": st.sampled_from(["+33612345678"]),
    },
)
ANSWERS = st.lists(
    st.fixed_dictionaries(
        {
            "statement_id": st.sampled_from(["s1", "s2"]),
            "scale": st.sampled_from(["affective", "conative", "action", "cognitive"]),
            "agree": st.booleans(),
        }
    ),
    max_size=3,
)
TRACKS = st.one_of(
    st.fixed_dictionaries(
        {
            "event": st.just("Order Completed"),
            "properties": st.fixed_dictionaries(
                {"order_id": st.sampled_from(["o1", "o2"]), "products": st.lists(PRODUCTS, max_size=3)},
                optional={"total": AMOUNTS, "cart_id": st.sampled_from(["k1"])},
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event": st.sampled_from(["Product Added", "Product Removed"]),
            "properties": st.fixed_dictionaries(
                {"cart_id": st.sampled_from(["k1", "k2"]), "product_id": st.sampled_from(["p1", "p2"])},
                optional={"price": AMOUNTS, "quantity": QUANTITIES},
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event": st.sampled_from(["Checkout Started", "Cart Viewed"]),
            "properties": st.fixed_dictionaries(
                {"cart_id": st.sampled_from(["k1", "k2"]), "products": st.lists(PRODUCTS, max_size=2)}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event": st.just("Product Viewed"),
            "properties": st.fixed_dictionaries({"product_id": st.just("p1")}),
        }
    ),
    st.fixed_dictionaries(
        {
            "event": st.sampled_from(["Order Refunded", "Order Cancelled"]),
            "properties": st.fixed_dictionaries(
                {"order_id": st.sampled_from(["o1", "o2"])}, optional={"total": AMOUNTS}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event": st.just("Survey Answered"),
            "properties": st.fixed_dictionaries(
                {"survey_id": st.just("sv"), "answers": ANSWERS},
                optional={"nps": st.integers(-1, 11), "csat": st.integers(0, 6)},
            ),
        }
    ),
)
CALLS = st.one_of(
    st.tuples(st.just("identify"), st.fixed_dictionaries({"traits": TRAITS})),
    st.tuples(st.just("track"), TRACKS),
    st.tuples(
        st.just("alias"),
        st.fixed_dictionaries({"previousId": st.sampled_from(["a1", "a2"]), "userId": st.just("u1")}),
    ),
)
HISTORIES = st.lists(
    st.tuples(CALLS, WHO, st.one_of(TIMES, st.none())),
    min_size=1,
    max_size=8,
)


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[httpx.AsyncClient, KeepingPublisher]]:
    async with keeping_ingest(NOW) as running:
        yield running


@property_settings(EXAMPLES, RANDOM)
@given(history=HISTORIES)
async def test_what_ingest_accepts_the_segmenter_decides(
    history: list[tuple[tuple[str, dict[str, Any]], dict[str, str], str | None]],
    engine: AsyncEngine,
    ingest: tuple[httpx.AsyncClient, KeepingPublisher],
    smtp_server: SmtpServer,
) -> None:
    client, publisher = ingest
    publisher.values.clear()
    for (kind, call), who, timestamp in history:
        body: dict[str, Any] = {**call, **who, "messageId": uuid.uuid4().hex}
        if kind == "alias":
            body.pop("anonymousId", None)
        elif "userId" not in body and "anonymousId" not in body:
            body["anonymousId"] = "a1"
        if timestamp is not None:
            body["timestamp"] = timestamp
        note(f"{kind} {body}")
        response = await client.post(f"/v1/{kind}", json=body, headers=BASIC)
        assert response.status_code < 500, response.text
        note(f"-> {response.status_code} {response.text[:200]}")
    await decide_and_send(publisher.values, engine, smtp_server, NOW)

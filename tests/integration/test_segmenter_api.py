"""The segmenter's REST API against a real Postgres, without Kafka.

Each test builds the read API as the service does (error handlers, the router, an engine and a store
registry), feeds canonical storefront events straight into `FunnelProcessor` (the consumer's one-transaction
step) and asks the API. Dates are fixed so every figure can be worked out by hand; `start`/`end` are always
passed explicitly. Every test has a store of its own (`store_id`), and every event id is prefixed with it,
so tests sharing the session's database never see each other's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import orders
from services.segmenter.entrypoints import routes
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from shared.clock import utcnow
from shared.registry_checks import sha256_hex
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreConfig, StoreRegistry
from shared.web import install_error_handlers
from tests.builders import segmenter_event

pytestmark = pytest.mark.integration

API_KEY = "k-test"
Json = dict[str, Any]


def utc(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- the app and its client ------------------------------------------------------------------------------


@dataclass
class SegmenterApi:
    """The read API of one test store, and the processor that feeds it."""

    store_id: str
    client: httpx.AsyncClient
    processor: FunnelProcessor
    engine: AsyncEngine
    stores: StoreRegistry

    async def fire_timers(self, now: datetime) -> None:
        """Fire every timer due by `now`, as the timer worker would, until none is left."""
        worker = TimerWorker(self.engine, self.stores, lambda: now)
        while await worker.fire_due():
            pass

    async def feed(self, *events: StorefrontEvent) -> None:
        """One call of the processor: one batch, one transaction (as one consumer poll would be)."""
        await self.processor(list(events))

    async def feed_each(self, events: Iterable[StorefrontEvent]) -> None:
        """One batch per event, in order."""
        for e in events:
            await self.processor([e])

    async def get(
        self, path: str, *, key: str | None = API_KEY, store_id: str | None = None, **params: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        url = f"/v1/stores/{store_id or self.store_id}{path}"
        return await self.client.get(url, params=params, headers=headers)

    async def ok(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def customer(self, customer_id: str) -> Json:
        body: Json = await self.ok(f"/customers/{customer_id}")
        return body


def build_app(engine: AsyncEngine, stores: StoreRegistry) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(routes.router)
    app.state.engine = engine
    app.state.stores = stores
    app.state.clock = utcnow
    return app


def store_config(store_id: str) -> StoreConfig:
    return StoreConfig(store_id=store_id, name=f"Store {store_id}", api_key_sha256=sha256_hex(API_KEY))


@pytest.fixture
async def api(engine: AsyncEngine, store_id: str) -> AsyncIterator[SegmenterApi]:
    stores = StoreRegistry([store_config(store_id)])
    transport = httpx.ASGITransport(app=build_app(engine, stores))
    async with httpx.AsyncClient(transport=transport, base_url="http://segmenter.test") as client:
        yield SegmenterApi(
            store_id=store_id,
            client=client,
            processor=FunnelProcessor(engine, stores),
            engine=engine,
            stores=stores,
        )


# -- canonical events ------------------------------------------------------------------------------------


def event(
    store_id: str,
    event_id: str,
    kind: str,
    at: datetime,
    customer: Json,
    payload: Json | None = None,
) -> StorefrontEvent:
    """A canonical event through the contract's own decoder; the id is unique to the test's store."""
    return segmenter_event(store_id, kind, at, customer, payload, event_id=f"{store_id}:{event_id}")


def item(
    product_id: str,
    price: str = "10.00",
    *,
    title: str | None = None,
    category: str | None = None,
    qty: int = 1,
) -> Json:
    line: Json = {"product_id": product_id, "price": price, "quantity": qty}
    if title is not None:
        line["title"] = title
    if category is not None:
        line["category"] = category
    return line


def order(
    store_id: str, customer: Json, order_id: str, at: datetime, total: str, *items: Json
) -> StorefrontEvent:
    payload = {"order_id": order_id, "total": total, "currency": "EUR", "line_items": list(items)}
    return event(store_id, f"order-{order_id}", "order_placed", at, customer, payload)


def refund(
    store_id: str, customer: Json, order_id: str, at: datetime, amount: str, *, cancelled: bool = False
) -> StorefrontEvent:
    payload = {"order_id": order_id, "amount": amount, "currency": "EUR", "cancelled": cancelled}
    return event(store_id, f"refund-{order_id}-{amount}", "order_refunded", at, customer, payload)


def upsert(store_id: str, event_id: str, at: datetime, customer: Json) -> StorefrontEvent:
    return event(store_id, event_id, "customer_upserted", at, customer)


def cart(
    store_id: str, customer: Json, cart_id: str, at: datetime, total: str, *items: Json
) -> StorefrontEvent:
    payload = {
        "cart_id": cart_id,
        "currency": "EUR",
        "total": total,
        "line_items": list(items),
        "recovery_url": f"https://shop.example.com/cart/{cart_id}",
    }
    return event(store_id, f"cart-{cart_id}-{at.isoformat()}", "cart_updated", at, customer, payload)


def survey(store_id: str, customer: Json, at: datetime, **answers: bool) -> StorefrontEvent:
    payload: Json = {
        "survey_id": "loyalty-3part",
        "answers": [{"statement_id": s.replace("__", "."), "agree": a} for s, a in answers.items()],
        "csat": 5,
        "ces": 2,
        "nps": 9,
    }
    return event(store_id, f"survey-{at.isoformat()}", "survey_answered", at, customer, payload)


def who(customer_id: str, **contact: Any) -> Json:
    return {"store_customer_id": customer_id, **contact}


def anon(anonymous_id: str) -> Json:
    return {"anonymous_id": anonymous_id}


def stage_moves(profile: Json) -> list[tuple[str, str, str, str]]:
    return [
        (t["dimension"], t["from_value"], t["to_value"], t["reason"])
        for t in profile["transitions"]
        if t["dimension"] == "stage"
    ]


# -- 1. one customer's profile ---------------------------------------------------------------------------


async def test_profile_reports_orders_figures_products_and_transitions(api: SegmenterApi) -> None:
    s = api.store_id
    kim = who(
        "c1", email="  Kim.Lee@Example.COM ", first_name="Kim", last_name="Lee", city="Lyon", country="FR"
    )
    o1 = order(
        s, kim, "o1", utc(2025, 1, 10), "30.00",
        item("p-tea", "20.00", title="Green tea", category="tea"),
        item("p-cup", "10.00", title="Cup", category="ware"),
    )  # fmt: skip
    o2 = order(
        s, who("c1"), "o2", utc(2025, 1, 20), "50.00",
        item("p-tea", "20.00", title="Green tea", category="tea"),
        item("p-pot", "30.00", title="Teapot", category="ware"),
    )  # fmt: skip
    o3 = order(
        s,
        who("c1"),
        "o3",
        utc(2025, 2, 13),
        "40.00",
        item("p-mate", "40.00", title="Mate", category="herbal"),
    )
    answered = survey(
        s,
        who("c1"),
        utc(2025, 2, 20),
        affective__really_like=True,
        conative__buy_again=True,
        action__recommend=True,
    )
    open_cart = cart(
        s, who("c1"), "cart-1", utc(2025, 2, 21), "25.00",
        item("p-tea", "10.00", qty=2), item("p-cup", "5.00"),
    )  # fmt: skip
    await api.feed_each([o1, o2, o3, answered, open_cart])

    p = await api.customer("c1")

    assert p["store_id"] == s
    assert p["customer_id"] == "c1"
    assert (p["stage"], p["health"], p["survey_level"]) == ("advocate", "active", "action")
    assert (p["email"], p["first_name"], p["last_name"], p["city"], p["country"]) == (
        "kim.lee@example.com", "Kim", "Lee", "Lyon", "FR",
    )  # fmt: skip
    assert p["orders_count"] == 3
    assert Decimal(p["total_spent"]) == Decimal("120.00")
    assert p["currency"] == "EUR"
    assert Decimal(p["average_order_value"]) == Decimal("40.00")
    assert when(p["first_order_at"]) == utc(2025, 1, 10)
    assert when(p["last_order_at"]) == utc(2025, 2, 13)
    assert p["median_days_between_orders"] == 17.0  # gaps of 10 and 24 days
    assert p["favourite_categories"] == ["tea", "ware", "herbal"]  # 2, 2 (by name), 1
    assert [x["product_id"] for x in p["last_products"]] == ["p-mate", "p-tea", "p-pot", "p-cup"]
    assert p["last_products"][0] == {
        "product_id": "p-mate",
        "title": "Mate",
        "category": "herbal",
        "price": None,
    }
    assert set(p["identifiers"]) == {"id:c1", "email:kim.lee@example.com", "order:o1", "order:o2", "order:o3"}
    assert [(c["cart_id"], c["items"], Decimal(c["total"]), c["currency"]) for c in p["carts"]] == [
        ("cart-1", 3, Decimal("25.00"), "EUR")
    ]
    assert p["carts"][0]["recovery_url"] == "https://shop.example.com/cart/cart-1"
    assert p["carts"][0]["abandoned_at"] is None
    assert p["survey"]["level"] == "action"
    assert (p["survey"]["csat"], p["survey"]["ces"], p["survey"]["nps"]) == (5, 2, 9)
    assert (p["referrals"], p["erased"]) == (0, False)

    assert stage_moves(p) == [
        ("stage", "prospect", "first_time", "1 order"),
        ("stage", "first_time", "repeat", "2 orders"),
        ("stage", "repeat", "loyal", "3 orders within 365 days"),
        ("stage", "loyal", "advocate", "action-level survey answer"),
    ]
    assert [(when(t["occurred_at"]), t["event_id"]) for t in p["transitions"]] == [
        (utc(2025, 1, 10), o1.event_id),
        (utc(2025, 1, 20), o2.event_id),
        (utc(2025, 2, 13), o3.event_id),
        (utc(2025, 2, 20), answered.event_id),
    ]

    # Any identifier the customer is known by answers with the same profile.
    for alias in ("id:c1", "email:kim.lee@example.com", "order:o2"):
        assert (await api.customer(alias))["customer_id"] == "c1", alias


async def test_refunds_lower_spend_and_a_cancelled_order_no_longer_counts(api: SegmenterApi) -> None:
    s = api.store_id
    c = who("c2")
    await api.feed_each(
        [
            order(s, c, "r1", utc(2025, 3, 1), "60.00", item("p1", "60.00")),
            order(s, c, "r2", utc(2025, 3, 11), "40.00", item("p2", "40.00")),
            refund(s, c, "r1", utc(2025, 3, 12), "15.00"),  # partial: still an order
            refund(s, c, "r2", utc(2025, 3, 13), "40.00", cancelled=True),
        ]
    )

    p = await api.customer("c2")

    assert p["orders_count"] == 1
    assert Decimal(p["total_spent"]) == Decimal("45.00")
    assert Decimal(p["average_order_value"]) == Decimal("45.00")
    assert when(p["last_order_at"]) == utc(2025, 3, 1)
    assert p["median_days_between_orders"] is None
    assert p["stage"] == "first_time"
    # The cancellation corrects the stage down, with its reason.
    assert stage_moves(p) == [
        ("stage", "prospect", "first_time", "1 order"),
        ("stage", "first_time", "repeat", "2 orders"),
        ("stage", "repeat", "first_time", "1 order"),
    ]


async def test_an_identified_visitor_brings_anonymous_history_into_the_merged_profile(
    api: SegmenterApi,
) -> None:
    s = api.store_id
    visitor = anon("a-1")
    guest_order = order(
        s, visitor, "g1", utc(2025, 3, 1, 10), "35.00", item("p-tea", "35.00", category="tea")
    )
    guest_cart = cart(s, visitor, "cart-9", utc(2025, 3, 5, 10), "12.00", item("p-cup", "12.00"))
    identify = upsert(
        s,
        "identify-u7",
        utc(2025, 3, 6, 9),
        who("u-7", anonymous_id="a-1", email="Ana@Example.com", first_name="Ana"),
    )
    await api.feed_each([guest_order, guest_cart])
    before = await api.customer("anon:a-1")
    assert (before["customer_id"], before["orders_count"], before["stage"]) == ("anon:a-1", 1, "first_time")

    await api.feed(identify)

    p = await api.customer("u-7")
    assert p["customer_id"] == "u-7"
    assert (p["email"], p["first_name"]) == ("ana@example.com", "Ana")
    assert (p["orders_count"], Decimal(p["total_spent"]), p["stage"]) == (1, Decimal("35.00"), "first_time")
    assert p["favourite_categories"] == ["tea"]
    assert [(c["cart_id"], c["items"], Decimal(c["total"])) for c in p["carts"]] == [
        ("cart-9", 1, Decimal("12.00"))
    ]
    assert {"id:u-7", "anon:a-1", "email:ana@example.com", "order:g1"} <= set(p["identifiers"])
    # The anonymous profile's history moved with it.
    assert [(t["dimension"], t["to_value"], t["event_id"]) for t in p["transitions"]] == [
        ("stage", "first_time", guest_order.event_id)
    ]
    # Every alias answers with the survivor.
    for alias in ("anon:a-1", "email:ana@example.com", "id:u-7", "order:g1"):
        assert (await api.customer(alias))["customer_id"] == "u-7", alias
    assert [c["customer_id"] for c in await api.ok("/customers", email="ana@example.com")] == ["u-7"]
    # One customer, not two: the absorbed profile is not counted.
    funnel = await api.ok("/funnel", start="2025-03-01", end="2025-03-07")
    assert funnel["customers"] == 1


async def test_merging_into_a_known_customer_unions_orders_and_earns_the_next_stage(
    api: SegmenterApi,
) -> None:
    s = api.store_id
    known = who("u-8", email="bo@example.com")
    first = order(s, known, "k1", utc(2025, 1, 5), "20.00", item("p1", "20.00"))
    guest = order(s, anon("a-2"), "g2", utc(2025, 3, 1), "30.00", item("p2", "30.00"))
    identify = upsert(s, "identify-u8", utc(2025, 3, 6), who("u-8", anonymous_id="a-2"))
    await api.feed_each([first, guest, identify])

    p = await api.customer("anon:a-2")

    assert p["customer_id"] == "u-8"
    assert (p["orders_count"], Decimal(p["total_spent"]), p["stage"]) == (2, Decimal("50.00"), "repeat")
    assert p["median_days_between_orders"] == 55.0
    # One history, derived from the union of the facts: each step dated and cited by the order that earned
    # it (the second order made a repeat customer on 1 March, whenever the link was learnt).
    assert [(t["to_value"], t["reason"], t["event_id"]) for t in p["transitions"]] == [
        ("first_time", "1 order", first.event_id),
        ("repeat", "2 orders", guest.event_id),
    ]
    assert when(p["transitions"][1]["occurred_at"]) == utc(2025, 3, 1)


async def test_linking_in_one_batch_gives_the_same_profile_as_one_event_at_a_time(
    engine: AsyncEngine, store_id: str
) -> None:
    """A consumer batch may hold a visitor's events and the identify that links them. The answer must not
    depend on how the events were batched."""
    other = f"{store_id}x"
    stores = StoreRegistry([store_config(store_id), store_config(other)])
    transport = httpx.ASGITransport(app=build_app(engine, stores))
    profiles: list[Json] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://segmenter.test") as client:
        for sid, batched in ((store_id, False), (other, True)):
            api = SegmenterApi(sid, client, FunnelProcessor(engine, stores), engine, stores)
            events = [
                order(sid, anon("a-3"), "g3", utc(2025, 4, 1), "25.00", item("p1", "25.00")),
                cart(sid, anon("a-3"), "cart-3", utc(2025, 4, 2), "10.00", item("p2", "10.00")),
                upsert(sid, "identify-u9", utc(2025, 4, 3), who("u-9", anonymous_id="a-3")),
            ]
            if batched:
                await api.feed(*events)
            else:
                await api.feed_each(events)
            profiles.append(await api.customer("anon:a-3"))

    one_by_one, batched_profile = profiles
    assert one_by_one["customer_id"] == batched_profile["customer_id"] == "u-9"
    assert batched_profile["orders_count"] == one_by_one["orders_count"] == 1
    assert [c["cart_id"] for c in batched_profile["carts"]] == ["cart-3"]
    assert stage_moves(one_by_one) == [("stage", "prospect", "first_time", "1 order")]
    # BUG: in one batch the visitor's transitions are written under the absorbed id after the merge
    # re-pointed that id's history, so the survivor's history is missing them.
    assert stage_moves(batched_profile) == stage_moves(one_by_one), (
        "transitions of the anonymous profile recorded in the same batch as the merge are lost from the "
        "survivor's history (write_set.Changes.write re-points before add_transitions inserts them)"
    )


async def test_alias_event_links_the_previous_id(api: SegmenterApi) -> None:
    """identity_linked (Segment alias from a server library): the customer is the new user id, the visitor's
    anonymous id is only in `payload.previous_id`."""
    s = api.store_id
    await api.feed(cart(s, anon("a-4"), "cart-4", utc(2025, 5, 1), "10.00", item("p1", "10.00")))
    await api.feed(
        event(
            s,
            "alias-u10",
            "identity_linked",
            utc(2025, 5, 2),
            who("u-10"),
            {"previous_id": "a-4", "previous_kind": "anonymous_id"},
        )
    )

    p = await api.customer("anon:a-4")

    assert p["customer_id"] == "u-10", (
        "an identity_linked event does not link payload.previous_id: the segmenter only reads identifiers "
        "from event.customer (domain/funnel.identifiers_of), so the alias is ignored"
    )
    assert [c["cart_id"] for c in p["carts"]] == ["cart-4"]


async def test_customer_errors_unknown_customer_wrong_key_unknown_store(api: SegmenterApi) -> None:
    await api.feed(upsert(api.store_id, "u-1", utc(2025, 1, 1), who("c1", email="c1@example.com")))

    missing = await api.get("/customers/nobody")
    assert missing.status_code == 404
    assert missing.json()["error"] == "customer_not_found"
    assert (await api.get("/customers/anon:nobody")).status_code == 404

    for key in ("wrong-key", None):
        denied = await api.get("/customers/c1", key=key)
        assert denied.status_code == 401, key
        assert denied.json()["error"] == "unauthorized"
        assert denied.headers["www-authenticate"] == "Bearer"

    unknown_store = await api.get("/customers/c1", store_id="no-such-store")
    assert unknown_store.status_code == 404
    assert unknown_store.json()["error"] == "store_not_found"

    # The same customer id in another store is not this store's customer.
    assert (await api.get("/customers/c1")).status_code == 200


# -- 2. look-up by email ---------------------------------------------------------------------------------


async def test_find_customers_by_email(api: SegmenterApi) -> None:
    s = api.store_id
    await api.feed_each(
        [
            upsert(s, "u-kim", utc(2025, 1, 1), who("kim", email="Kim.Lee@Example.com", first_name="Kim")),
            upsert(s, "u-bo", utc(2025, 1, 2), who("bo", email="bo@example.com")),
        ]
    )

    found = await api.ok("/customers", email="  KIM.lee@EXAMPLE.com ")
    assert [(c["customer_id"], c["email"], c["first_name"]) for c in found] == [
        ("kim", "kim.lee@example.com", "Kim")
    ]
    assert found[0]["stage"] == "prospect"
    assert await api.ok("/customers", email="nobody@example.com") == []

    short = await api.get("/customers", email="ab")
    assert short.status_code == 422
    assert [e["field"] for e in short.json()["errors"]] == ["email"]
    absent = await api.get("/customers")
    assert absent.status_code == 422
    assert [e["field"] for e in absent.json()["errors"]] == ["email"]


# -- 3. the funnel ---------------------------------------------------------------------------------------


async def test_funnel_counts_and_daily_transitions(api: SegmenterApi) -> None:
    s = api.store_id
    plus2 = timezone(timedelta(hours=2))
    await api.feed_each(
        [
            upsert(s, "u-a", utc(2025, 5, 1, 9), who("a")),  # prospect
            order(s, who("b"), "b1", utc(2025, 5, 2, 10), "10.00"),  # first_time
            order(s, who("c"), "c1", utc(2025, 5, 2, 11), "10.00"),
            order(s, who("c"), "c2", utc(2025, 5, 3, 11), "10.00"),  # repeat
            # 01:30 at +02:00 is 23:30 UTC the day before: days are UTC days.
            order(s, who("d"), "d1", datetime(2025, 5, 2, 1, 30, tzinfo=plus2), "10.00"),
            order(s, who("d"), "d2", utc(2025, 5, 2, 0, 30), "10.00"),
            order(s, who("d"), "d3", utc(2025, 5, 3, 12), "10.00"),  # loyal
            # Visitors who bought long ago and are identified later: their health moved when it was due
            # (at risk after 90 days, lapsed after 180), dated then, not when the link was learnt.
            order(s, anon("e"), "e1", utc(2025, 1, 10), "10.00"),
            upsert(s, "u-e", utc(2025, 5, 1, 12), who("e", anonymous_id="e")),  # 111 days: at risk
            order(s, anon("f"), "f1", utc(2024, 10, 1), "10.00"),
            upsert(s, "u-f", utc(2025, 5, 3, 8), who("f", anonymous_id="f")),  # 214 days: lapsed
        ]
    )
    await api.fire_timers(utc(2025, 5, 4, 0))

    report = await api.ok("/funnel", start="2025-05-01T00:00:00Z", end="2025-05-04T00:00:00Z")

    assert report["store_id"] == s
    assert report["customers"] == 6
    assert report["by_stage"] == {"prospect": 1, "first_time": 3, "repeat": 1, "loyal": 1, "advocate": 0}
    assert report["by_health"] == {"active": 4, "at_risk": 1, "lapsed": 1}
    assert {(c["stage"], c["health"]): c["customers"] for c in report["cells"]} == {
        ("prospect", "active"): 1,
        ("first_time", "active"): 1,
        ("first_time", "at_risk"): 1,
        ("first_time", "lapsed"): 1,
        ("repeat", "active"): 1,
        ("loyal", "active"): 1,
    }
    assert (when(report["start"]), when(report["end"])) == (utc(2025, 5, 1, 0), utc(2025, 5, 4, 0))
    daily = sorted(
        (t["date"], t["dimension"], t["from_value"], t["to_value"], t["count"]) for t in report["transitions"]
    )
    assert daily == [
        ("2025-05-01", "stage", "prospect", "first_time", 1),
        ("2025-05-02", "stage", "first_time", "repeat", 1),
        ("2025-05-02", "stage", "prospect", "first_time", 2),
        ("2025-05-03", "stage", "first_time", "repeat", 1),
        ("2025-05-03", "stage", "repeat", "loyal", 1),
    ]
    assert [t["date"] for t in report["transitions"]] == sorted(t["date"] for t in report["transitions"])

    # [start, end): a day's first instant is in, the end's is out; date-only bounds mean 00:00 UTC.
    one_day = await api.ok("/funnel", start="2025-05-02", end="2025-05-03")
    assert sorted((t["date"], t["to_value"], t["count"]) for t in one_day["transitions"]) == [
        ("2025-05-02", "first_time", 2),
        ("2025-05-02", "repeat", 1),
    ]
    # Counts are "now", whatever the period.
    assert one_day["customers"] == 6
    # The visitors' own history: first orders, then health moving when it was due.
    autumn = await api.ok("/funnel", start="2024-09-01", end="2025-05-01")
    assert sorted((t["date"], t["to_value"], t["count"]) for t in autumn["transitions"]) == [
        ("2024-10-01", "first_time", 1),
        ("2024-12-30", "at_risk", 1),
        ("2025-01-10", "first_time", 1),
        ("2025-03-30", "lapsed", 1),
        ("2025-04-10", "at_risk", 1),
    ]


async def test_funnel_of_an_empty_store_and_bad_periods(api: SegmenterApi) -> None:
    empty = await api.ok("/funnel", start="2025-01-01", end="2025-02-01")
    assert empty["customers"] == 0
    assert set(empty["by_stage"].values()) == {0}
    assert (empty["cells"], empty["transitions"]) == ([], [])

    for start, end in (("2025-02-01", "2025-01-01"), ("2025-01-01", "2025-01-01")):
        for path in ("/funnel", "/metrics/retention"):
            bad = await api.get(path, start=start, end=end)
            assert bad.status_code == 422, (path, start, end)
            assert bad.json()["error"] == "invalid_period"
            assert [e["field"] for e in bad.json()["errors"]] == ["start"]

    garbled = await api.get("/funnel", start="last tuesday", end="2025-01-01")
    assert garbled.status_code == 422
    assert [e["field"] for e in garbled.json()["errors"]] == ["start"]


async def test_periods_at_the_ends_of_the_calendar_are_answered_or_refused_naming_the_bound(
    api: SegmenterApi,
) -> None:
    """A period from year 1 on is a real question ("since ever"): answered, the store's 365-day window
    reaching back from its start stopping at year 1 (it was a 500: `start - window` overflowed). A bound
    whose offset puts it outside years 1-9999 in UTC is refused naming it (found by schemathesis, issue 14's
    nineteenth round)."""
    s = api.store_id
    await api.feed(order(s, who("p1"), "p1-a", utc(2025, 3, 10), "70.00"))
    for path in ("/funnel", "/metrics/retention"):
        ever = await api.ok(path, start="0001-01-01", end="2025-12-31")
        assert when(ever["start"]) == datetime(1, 1, 1, tzinfo=UTC), path
        until = await api.ok(path, end="0001-01-02T00:00:00Z")  # the default start, before year 1, is year 1
        assert when(until["start"]) == datetime(1, 1, 1, tzinfo=UTC), path
        for bound, value in (("start", "0001-01-01T00:00:00+05:00"), ("end", "9999-12-31T23:59:59-05:00")):
            bad = await api.get(path, **{bound: value})
            assert bad.status_code == 422, (path, bound, bad.text)
            assert [e["field"] for e in bad.json()["errors"]] == [bound]
    retention = await api.ok("/metrics/retention", start="0001-01-01", end="2025-12-31")
    assert (retention["B"], retention["E"], retention["N"], retention["orders"]) == (0, 1, 1, 1)


# -- 4. retention ----------------------------------------------------------------------------------------


async def test_retention_figures_worked_out_by_hand(api: SegmenterApi) -> None:
    """Period [2025-01-01, 2025-07-01], active window 365 days: a customer counts at a date when their last
    counted order is in (date - 365 days, date], i.e. after 2024-01-02 for B and after 2024-07-01 for E.

    | customer | counted orders                    | B | E | N | in-period orders (revenue)       |
    | p1       | 2024-03-10, 2025-02-10            | 1 | 1 | 0 | 1 (100.00)                       |
    | p2       | 2024-06-15                        | 1 | 0 | 0 | -                                |
    | p3       | 2024-09-01                        | 1 | 1 | 0 | -                                |
    | p4       | 2023-06-01                        | 0 | 0 | 0 | -                                |
    | p5       | 2025-03-01, 2025-04-01            | 0 | 1 | 1 | 2 (40.00 + 60.00)                |
    | p6       | 2025-05-05 (80.00, 20.00 refunded)| 0 | 1 | 1 | 1 (60.00)                        |
    | p7       | 2023-05-01, 2025-06-01            | 0 | 1 | 0 | 1 (50.00): back after two years  |
    | p8       | none (2025-02-20 cancelled)       | 0 | 0 | 0 | -                                |
    | p9       | 2024-05-01 (2025-03-03 refunded)  | 1 | 0 | 0 | -                                |

    B = 4, E = 5, N = 2, CRR = (5 - 2) / 4 x 100 = 75.0; 5 orders by 4 buyers, one of whom (p5) ordered
    twice: repeat rate 25.0 %, frequency 1.25; revenue 310.00 / 5 orders = 62.00.
    """
    s = api.store_id
    await api.feed_each(
        [
            order(s, who("p1"), "p1-a", utc(2024, 3, 10), "70.00"),
            order(s, who("p1"), "p1-b", utc(2025, 2, 10), "100.00"),
            order(s, who("p2"), "p2-a", utc(2024, 6, 15), "20.00"),
            order(s, who("p3"), "p3-a", utc(2024, 9, 1), "30.00"),
            order(s, who("p4"), "p4-a", utc(2023, 6, 1), "45.00"),
            order(s, who("p5"), "p5-a", utc(2025, 3, 1), "40.00"),
            order(s, who("p5"), "p5-b", utc(2025, 4, 1), "60.00"),
            order(s, who("p6"), "p6-a", utc(2025, 5, 5), "80.00"),
            refund(s, who("p6"), "p6-a", utc(2025, 5, 6), "20.00"),
            order(s, who("p7"), "p7-a", utc(2023, 5, 1), "15.00"),
            order(s, who("p7"), "p7-b", utc(2025, 6, 1), "50.00"),
            order(s, who("p8"), "p8-a", utc(2025, 2, 20), "99.00"),
            refund(s, who("p8"), "p8-a", utc(2025, 2, 21), "99.00", cancelled=True),
            order(s, who("p9"), "p9-a", utc(2024, 5, 1), "25.00"),
            order(s, who("p9"), "p9-b", utc(2025, 3, 3), "35.00"),
            refund(s, who("p9"), "p9-b", utc(2025, 3, 4), "35.00"),
        ]
    )

    r = await api.ok("/metrics/retention", start="2025-01-01T00:00:00Z", end="2025-07-01T00:00:00Z")

    assert r["store_id"] == s
    assert (when(r["start"]), when(r["end"])) == (utc(2025, 1, 1, 0), utc(2025, 7, 1, 0))
    assert r["active_window_days"] == 365
    assert (r["B"], r["E"], r["N"]) == (4, 5, 2)
    assert r["crr"] == round((r["E"] - r["N"]) / r["B"] * 100, 2) == 75.0
    assert r["orders"] == 5
    assert r["repeat_purchase_rate"] == 25.0
    assert r["purchase_frequency"] == 1.25
    assert Decimal(r["average_order_value"]) == Decimal("62.00")
    assert (r["at_risk"], r["lapsed"]) == (0, 0)

    # 2023: nobody counted on 1 January (B = 0), so there is no rate; p4 and p7 were new that year.
    y2023 = await api.ok("/metrics/retention", start="2023-01-01", end="2023-12-31")
    assert (y2023["B"], y2023["E"], y2023["N"], y2023["crr"]) == (0, 2, 2, None)
    assert (y2023["orders"], y2023["repeat_purchase_rate"], y2023["purchase_frequency"]) == (2, 0.0, 1.0)
    assert Decimal(y2023["average_order_value"]) == Decimal("30.00")

    # A period without orders: figures per order are null, not zero and not an error.
    quiet = await api.ok("/metrics/retention", start="2022-01-01", end="2022-12-31")
    assert (quiet["B"], quiet["E"], quiet["N"], quiet["orders"]) == (0, 0, 0, 0)
    assert quiet["crr"] is quiet["repeat_purchase_rate"] is quiet["purchase_frequency"] is None
    assert quiet["average_order_value"] is None


async def test_a_cancelled_order_drops_out_of_retention(api: SegmenterApi) -> None:
    s = api.store_id
    period = {"start": "2025-01-01", "end": "2025-12-31"}
    await api.feed(order(s, who("x"), "x1", utc(2025, 2, 1), "50.00"))
    assert (await api.ok("/metrics/retention", **period))["N"] == 1

    await api.feed(refund(s, who("x"), "x1", utc(2025, 2, 2), "50.00", cancelled=True))

    r = await api.ok("/metrics/retention", **period)
    assert (r["B"], r["E"], r["N"], r["orders"], r["average_order_value"]) == (0, 0, 0, 0, None)
    p = await api.customer("x")
    assert (p["orders_count"], Decimal(p["total_spent"]), p["stage"]) == (0, Decimal("0"), "prospect")


async def test_retention_period_start_does_not_count_one_customer_as_both_retained_and_new(
    api: SegmenterApi,
) -> None:
    """A customer whose first order is placed at the very instant the period starts is either a customer of
    the start (B) or a new one (N), not both: CRR = (E - N) / B only measures retention when no customer of
    B is also counted in N."""
    s = api.store_id
    await api.feed_each(
        [
            order(s, who("y"), "y1", utc(2025, 1, 1, 0), "10.00"),
            order(s, who("y"), "y2", utc(2025, 3, 1), "10.00"),
        ]
    )

    r = await api.ok("/metrics/retention", start="2025-01-01T00:00:00Z", end="2025-07-01T00:00:00Z")

    assert r["E"] == 1
    assert r["B"] + r["N"] == 1, (
        f"B={r['B']} and N={r['N']}: an order at exactly `start` makes its customer count both at the start "
        f"(placed_at <= start) and as new (first order >= start), so crr={r['crr']} for a customer who "
        "stayed (adapters/reports.py: _active_at vs `new`)"
    )


# -- 5. complements --------------------------------------------------------------------------------------


async def test_complements_rank_products_bought_together(api: SegmenterApi) -> None:
    s = api.store_id
    a, b, c, d, e = (
        item("A", title="Tea"), item("B", title="Cup"), item("C", title="Pot"),
        item("D", title="Honey"), item("E", title="Spoon"),
    )  # fmt: skip
    a_other_variant = {**a, "variant_id": "large"}
    await api.feed_each(
        [
            order(s, who("k1"), "m1", utc(2025, 6, 1), "30.00", a, b, c),
            order(s, who("k2"), "m2", utc(2025, 6, 2), "20.00", a, b),
            order(s, who("k3"), "m3", utc(2025, 6, 3), "20.00", a, d),
            order(s, who("k1"), "m4", utc(2025, 6, 4), "30.00", a, b, d),
            order(s, who("k2"), "m5", utc(2025, 6, 5), "20.00", b, c),  # without A
            order(s, who("k3"), "m6", utc(2025, 6, 6), "30.00", a, a_other_variant, e),  # A twice: one order
        ]
    )

    ranked = await api.ok("/products/A/complements")
    assert [(x["product_id"], x["title"], x["orders_together"]) for x in ranked] == [
        ("B", "Cup", 3),
        ("D", "Honey", 2),
        ("C", "Pot", 1),  # ties by product id
        ("E", "Spoon", 1),
    ]
    assert [x["product_id"] for x in await api.ok("/products/A/complements", limit=2)] == ["B", "D"]
    assert [(x["product_id"], x["orders_together"]) for x in await api.ok("/products/C/complements")] == [
        ("B", 2),
        ("A", 1),
    ]
    assert await api.ok("/products/unknown/complements") == []

    for limit in (0, 51, "many"):
        bad = await api.get("/products/A/complements", limit=limit)
        assert bad.status_code == 422, limit
        assert [err["field"] for err in bad.json()["errors"]] == ["limit"]


def edited(
    store_id: str,
    customer: Json,
    order_id: str,
    placed: datetime,
    edited_at: datetime,
    total: str,
    *items: Json,
) -> StorefrontEvent:
    """Shopify's orders/updated after an order edit: the same order and placing time, its new lines and total,
    and `updated_at`; under an event id that sorts before the order's own (Shopify's ids are random)."""
    payload = {
        "order_id": order_id,
        "total": total,
        "currency": "EUR",
        "line_items": list(items),
        "updated_at": edited_at.isoformat(),
    }
    return event(store_id, f"edit-{order_id}", "order_placed", placed, customer, payload)


async def test_an_edited_order_holds_its_edit_whichever_delivery_comes_first(api: SegmenterApi) -> None:
    """An order edit (a line removed, another added) reaches us as the same order again. Before, the
    version that arrived first stayed: delivered in order the edit changed nothing (the total spent, the
    orders row and the products bought together kept the lines the customer no longer has); delivered
    first, it held, so the state depended on the delivery order."""
    s = api.store_id
    placed, later = utc(2025, 6, 1), utc(2025, 6, 1, 15)
    tea, cup, pot, honey, spoon, jar = (
        item("A", title="Tea"), item("B", title="Cup"), item("C", title="Pot"),
        item("D", title="Honey"), item("E", title="Spoon"), item("F", title="Jar"),
    )  # fmt: skip
    await api.feed_each(
        [
            # In order: the order, then its edit.
            order(s, who("k1"), "m1", placed, "20.00", tea, cup),
            edited(s, who("k1"), "m1", placed, later, "15.00", tea, pot),
            # The edit first, then the order as first made.
            edited(s, who("k2"), "m2", placed, later, "15.00", honey, jar),
            order(s, who("k2"), "m2", placed, "20.00", honey, spoon),
        ]
    )

    for customer in ("k1", "k2"):
        p = await api.customer(customer)
        assert (p["orders_count"], Decimal(p["total_spent"])) == (1, Decimal("15.00")), customer
    async with api.engine.connect() as conn:
        rows = await conn.execute(
            select(orders.c.order_id, orders.c.total)
            .where(orders.c.store_id == s)
            .order_by(orders.c.order_id)
        )
        assert [tuple(r) for r in rows] == [("m1", Decimal("15.00")), ("m2", Decimal("15.00"))]
    together = {
        product: [
            (x["product_id"], x["orders_together"]) for x in await api.ok(f"/products/{product}/complements")
        ]
        for product in "ABCDEF"
    }
    assert together == {
        "A": [("C", 1)],
        "B": [],  # bought with A only in the version the edit replaced
        "C": [("A", 1)],
        "D": [("F", 1)],
        "E": [],  # only in the older version, which came second
        "F": [("D", 1)],
    }


# -- 6. redelivery ---------------------------------------------------------------------------------------


async def _answers(api: SegmenterApi) -> Json:
    """Everything the API says about the scenario below."""
    period = {"start": "2025-01-01", "end": "2025-12-31"}
    return {
        "customers": {c: await api.customer(c) for c in ("m", "n", "anon:v")},
        "by_email": await api.ok("/customers", email="m@example.com"),
        "funnel": await api.ok("/funnel", **period),
        "retention": await api.ok("/metrics/retention", **period),
        "complements": {p: await api.ok(f"/products/{p}/complements") for p in ("A", "B", "C")},
    }


async def test_a_redelivered_event_changes_nothing(api: SegmenterApi) -> None:
    s = api.store_id
    m = who("m", email="M@example.com", first_name="Mo")
    events = [
        order(s, m, "q1", utc(2025, 2, 1), "30.00", item("A", title="Tea"), item("B", title="Cup")),
        order(s, who("m"), "q2", utc(2025, 3, 1), "20.00", item("A", title="Tea"), item("C", title="Pot")),
        refund(s, who("m"), "q2", utc(2025, 3, 2), "5.00"),
        order(s, who("n"), "q3", utc(2025, 4, 1), "40.00", item("B", title="Cup"), item("C", title="Pot")),
        survey(s, who("m"), utc(2025, 4, 2), conative__buy_again=True),
        cart(s, anon("v"), "cart-v", utc(2025, 4, 3), "10.00", item("A", "10.00")),
        order(s, anon("v"), "q4", utc(2025, 4, 4), "10.00", item("A", title="Tea"), item("B", title="Cup")),
        upsert(s, "identify-n", utc(2025, 4, 5), who("n", anonymous_id="v")),
    ]
    await api.feed_each(events)
    first = await _answers(api)
    assert first["customers"]["m"]["stage"] == "loyal"  # 2 orders and a conative answer
    assert first["customers"]["anon:v"]["customer_id"] == "n"
    assert [(x["product_id"], x["orders_together"]) for x in first["complements"]["A"]] == [
        ("B", 2),
        ("C", 1),
    ]

    # Each event delivered again, alone; the whole stream again in one batch; a batch holding one event
    # twice; and an id seen before carrying other content (a redelivery is recognised by its id alone).
    await api.feed_each(events)
    await api.feed(*events)
    await api.feed(events[3], events[3])
    tampered = order(s, who("n"), "q3-other", utc(2025, 4, 1), "999.00", item("A"), item("Z"))
    tampered = msgspec.structs.replace(tampered, event_id=events[3].event_id)
    await api.feed(tampered)

    assert await _answers(api) == first


async def test_the_same_order_under_a_new_event_id_is_counted_once(api: SegmenterApi) -> None:
    """orders/updated, or a second source reporting the same order: a new event id, the same order id."""
    s = api.store_id
    placed = order(s, who("m"), "w1", utc(2025, 2, 1), "30.00", item("A"), item("B"))
    await api.feed(placed)
    again = msgspec.structs.replace(placed, event_id=f"{s}:orders-updated-w1")
    await api.feed(again)

    p = await api.customer("m")
    assert (p["orders_count"], Decimal(p["total_spent"]), p["stage"]) == (1, Decimal("30.00"), "first_time")
    assert [(x["product_id"], x["orders_together"]) for x in await api.ok("/products/A/complements")] == [
        ("B", 1)
    ]
    r = await api.ok("/metrics/retention", start="2025-01-01", end="2025-12-31")
    assert (r["N"], r["orders"]) == (1, 1)


async def test_an_event_id_seen_in_another_store_is_not_a_redelivery(
    engine: AsyncEngine, store_id: str
) -> None:
    """Event ids are a source's own ids (`woocommerce:<delivery id>` counts 1, 2, 3... on every site):
    two stores may send the same one, and each store's event must still be applied."""
    other = f"{store_id}x"
    stores = StoreRegistry([store_config(store_id), store_config(other)])
    processor = FunnelProcessor(engine, stores)
    shared_id = f"woocommerce:{store_id}-delivery-1"
    for sid in (store_id, other):
        placed = order(sid, who("c1"), "1001", utc(2025, 2, 1), "30.00")
        await processor([msgspec.structs.replace(placed, event_id=shared_id)])

    transport = httpx.ASGITransport(app=build_app(engine, stores))
    async with httpx.AsyncClient(transport=transport, base_url="http://segmenter.test") as client:
        first = SegmenterApi(store_id, client, processor, engine, stores)
        second = SegmenterApi(other, client, processor, engine, stores)
        assert (await first.customer("c1"))["orders_count"] == 1
        response = await second.get("/customers/c1")
        assert response.status_code == 200, (
            "the second store's event was dropped as a duplicate of the first store's: processed_events is "
            "keyed by event_id alone (adapters/repository.claim_events, on_conflict_do_nothing on event_id)"
        )

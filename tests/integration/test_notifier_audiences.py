"""Audience memberships against a real Postgres: kept per customer change, expired by the worker's clock,
exported through the REST API in each format."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.adapters.tables import audience_members, audience_reevaluations, customers
from services.notifier.domain.audiences import sha256_hex
from services.notifier.entrypoints.audience_routes import audience_router
from services.notifier.entrypoints.audience_worker import AudienceWorker
from shared.events import SHOP_WIDE
from shared.stores import StoreConfig, StoreRegistry
from shared.web import install_error_handlers

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
API_KEY = "test-audiences-key"


def store_config(store_id: str, **audiences: Any) -> StoreConfig:
    return StoreConfig.model_validate(
        {"store_id": store_id, "name": "Test", "api_key": API_KEY, "audiences": audiences}
    )


async def put_customers(engine: AsyncEngine, store_id: str, rows: list[dict[str, Any]]) -> None:
    """Customers rows as the processor keeps them (written directly: this test is about audiences)."""
    values = [
        {
            "store_id": store_id,
            "email": f"{row['customer_id']}@example.com",
            "phone": None,
            "accepts_marketing": True,
            "unsubscribed_at": None,
            "stage": "first_time",
            "health": "active",
            "profile": {"first_name": "Ines", "last_name": "Moreau", "country": "France"},
            "last_order_at": None,
            "last_cart_abandoned_at": None,
            **row,
        }
        for row in rows
    ]
    stmt = insert(customers).values(values)
    updated = {key: stmt.excluded[key] for key in values[0] if key not in ("store_id", "customer_id")}
    async with engine.begin() as conn:
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["store_id", "customer_id"], set_=updated)
        )


async def refresh(engine: AsyncEngine, store: StoreConfig, ids: list[str], now: datetime) -> None:
    async with engine.begin() as conn:
        await refresh_memberships(conn, store, ids, now)


async def memberships(engine: AsyncEngine, store_id: str) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(audience, customer) -> (member, exportable)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audience_members.c.audience, audience_members.c.customer_id, audience_members.c.member,
                   audience_members.c.contact).where(audience_members.c.store_id == store_id)
        )  # fmt: skip
        return {(r.audience, r.customer_id): (r.member, r.contact is not None) for r in rows}


async def test_memberships_follow_customer_changes_and_consent(engine: AsyncEngine, store_id: str) -> None:
    store = store_config(store_id)
    await put_customers(
        engine,
        store_id,
        [
            {"customer_id": "c1", "stage": "loyal"},
            {"customer_id": "c2", "accepts_marketing": False, "health": "at_risk"},
        ],
    )
    await refresh(engine, store, ["c1", "c2", "never-seen"], T0)
    assert await memberships(engine, store_id) == {
        ("all_customers", "c1"): (True, True),
        ("loyal_and_advocates", "c1"): (True, True),
        ("all_customers", "c2"): (True, False),
        ("win_back", "c2"): (True, False),
    }

    # c1 unsubscribes and drops to repeat; c2 consents and comes back to active.
    await put_customers(
        engine,
        store_id,
        [
            {"customer_id": "c1", "stage": "repeat", "unsubscribed_at": T0},
            {"customer_id": "c2", "accepts_marketing": True, "health": "active"},
        ],
    )
    await refresh(engine, store, ["c1", "c2"], T0)
    assert await memberships(engine, store_id) == {
        ("all_customers", "c1"): (True, False),
        ("all_customers", "c2"): (True, True),
    }

    # Erasure: contact details and the consent answer are gone, and so is every membership.
    await put_customers(
        engine, store_id, [{"customer_id": "c2", "email": None, "phone": None, "accepts_marketing": None}]
    )
    await refresh(engine, store, ["c2"], T0)
    assert await memberships(engine, store_id) == {("all_customers", "c1"): (True, False)}


async def test_a_shop_wide_erasure_empties_every_audience(engine: AsyncEngine, store_id: str) -> None:
    store = store_config(store_id)
    ids = ["c1", "c2", "c3"]
    await put_customers(engine, store_id, [{"customer_id": i, "stage": "loyal"} for i in ids])
    await refresh(engine, store, ids, T0)
    assert len(await memberships(engine, store_id)) == 6
    erased: dict[str, Any] = {"email": None, "phone": None, "accepts_marketing": None, "profile": {}}
    await put_customers(engine, store_id, [{"customer_id": i, **erased} for i in ids])
    await refresh(engine, store, [SHOP_WIDE], T0)
    assert await memberships(engine, store_id) == {}


async def test_the_worker_lets_a_cart_abandoner_go_when_seven_days_have_passed(
    engine: AsyncEngine, store_id: str
) -> None:
    store = store_config(store_id)
    abandoned = T0 - timedelta(days=1)
    await put_customers(engine, store_id, [{"customer_id": "c1", "last_cart_abandoned_at": abandoned}])
    await refresh(engine, store, ["c1"], T0)
    assert ("cart_abandoners", "c1") in await memberships(engine, store_id)

    clock = [abandoned + timedelta(days=7) - timedelta(seconds=1)]
    worker = AudienceWorker(engine=engine, stores=StoreRegistry([store]), clock=lambda: clock[0])
    await worker.step()
    assert ("cart_abandoners", "c1") in await memberships(engine, store_id)

    clock[0] = abandoned + timedelta(days=7)
    assert await worker.reevaluate_due(clock[0]) >= 1
    assert await memberships(engine, store_id) == {("all_customers", "c1"): (True, True)}
    async with engine.connect() as conn:
        timers = await conn.execute(
            select(audience_reevaluations).where(audience_reevaluations.c.store_id == store_id)
        )
        assert timers.all() == []


async def test_a_quiet_customer_joins_when_the_window_opens(engine: AsyncEngine, store_id: str) -> None:
    store = store_config(store_id, definitions={"quiet": {"no_order_within": "30d"}})
    await put_customers(engine, store_id, [{"customer_id": "c1", "last_order_at": T0 - timedelta(days=29)}])
    await refresh(engine, store, ["c1"], T0)
    assert ("quiet", "c1") not in await memberships(engine, store_id)
    worker = AudienceWorker(engine=engine, stores=StoreRegistry([store]), clock=lambda: T0)
    await worker.reevaluate_due(T0 + timedelta(days=1))
    assert ("quiet", "c1") in await memberships(engine, store_id)


# --- REST API -----------------------------------------------------------------------------------------------


def api_store(store_id: str) -> StoreConfig:
    return store_config(store_id, definitions={"vip": {"stages": ["loyal"], "description": "VIPs"}})


@pytest.fixture
async def api(engine: AsyncEngine, store_id: str) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.state.engine = engine
    app.state.stores = StoreRegistry([api_store(store_id)])
    app.include_router(audience_router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://notifier", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        yield client


def _csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


async def test_audience_sizes_and_exports_in_each_format(
    api: httpx.AsyncClient, engine: AsyncEngine, store_id: str
) -> None:
    store = api_store(store_id)
    await put_customers(
        engine,
        store_id,
        [
            {
                "customer_id": "c1",
                "stage": "loyal",
                "email": " Test@Gmail.com ",
                "phone": "(650) 555-1212",
                "profile": {"first_name": "Ines", "last_name": "Moreau", "country": "United States"},
            },
            {"customer_id": "c2", "stage": "loyal", "accepts_marketing": False},
            {"customer_id": "c3", "stage": "loyal", "unsubscribed_at": T0},
            {"customer_id": "c4", "stage": "first_time", "email": None, "phone": "+44 7700 900123"},
        ],
    )
    await refresh(engine, store, ["c1", "c2", "c3", "c4"], T0)

    listed = await api.get(f"/v1/stores/{store_id}/audiences")
    assert listed.status_code == 200
    by_name = {a["name"]: a for a in listed.json()}
    assert set(by_name) == {"all_customers", "cart_abandoners", "loyal_and_advocates", "vip", "win_back"}
    assert by_name["vip"] == {"name": "vip", "description": "VIPs", "size": 3, "exportable": 1}
    assert by_name["all_customers"]["size"] == 4
    assert by_name["all_customers"]["exportable"] == 2
    assert by_name["cart_abandoners"] == {**by_name["cart_abandoners"], "size": 0, "exportable": 0}

    people = _csv(await api.get(f"/v1/stores/{store_id}/audiences/all_customers/members"))
    assert people == [
        ["customer_id", "email", "phone", "first_name", "last_name", "country", "stage", "health"],
        ["c1", "test@gmail.com", "+16505551212", "Ines", "Moreau", "United States", "loyal", "active"],
        ["c4", "", "+447700900123", "Ines", "Moreau", "France", "first_time", "active"],
    ]
    meta = _csv(await api.get(f"/v1/stores/{store_id}/audiences/vip/members", params={"format": "meta"}))
    assert meta == [["EMAIL", "PHONE"], [sha256_hex("test@gmail.com"), sha256_hex("16505551212")]]
    google = _csv(
        await api.get(f"/v1/stores/{store_id}/audiences/all_customers/members", params={"format": "google"})
    )
    assert google == [
        ["Email", "Phone"],
        [sha256_hex("test@gmail.com"), sha256_hex("+16505551212")],
        ["", sha256_hex("+447700900123")],
    ]


async def test_export_errors_name_what_is_wrong(api: httpx.AsyncClient, store_id: str) -> None:
    bad_format = await api.get(f"/v1/stores/{store_id}/audiences/vip/members", params={"format": "xml"})
    assert bad_format.status_code == 422
    assert [e["field"] for e in bad_format.json()["errors"]] == ["format"]
    unknown = await api.get(f"/v1/stores/{store_id}/audiences/nope/members")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "audience_not_found"
    no_key = await api.get(f"/v1/stores/{store_id}/audiences", headers={"Authorization": "Bearer wrong"})
    assert no_key.status_code == 401
    no_store = await api.get("/v1/stores/no-such-store/audiences")
    assert no_store.status_code == 404


async def test_a_large_audience_streams_every_member(
    api: httpx.AsyncClient, engine: AsyncEngine, store_id: str
) -> None:
    store = api_store(store_id)
    ids = [f"c{n:05d}" for n in range(2500)]  # more than one chunk and one cursor partition
    await put_customers(engine, store_id, [{"customer_id": i} for i in ids])
    await refresh(engine, store, ids, T0)
    async with api.stream("GET", f"/v1/stores/{store_id}/audiences/all_customers/members") as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line]
    assert len(lines) == 1 + len(ids)
    assert lines[1].startswith("c00000,")
    assert lines[-1].startswith("c02499,")
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM notifier.audience_members WHERE store_id = :s AND member"),
            {"s": store_id},
        )
    assert count == len(ids)


async def test_an_export_page_by_page_follows_its_links_to_every_member_once(
    api: httpx.AsyncClient, engine: AsyncEngine, store_id: str
) -> None:
    store = api_store(store_id)
    ids = [f"email:p{n:03d}@example.com" for n in range(25)]
    await put_customers(engine, store_id, [{"customer_id": i} for i in ids])
    await refresh(engine, store, ids, T0)
    seen: list[str] = []
    url: str | None = f"/v1/stores/{store_id}/audiences/all_customers/members?limit=10"
    pages = 0
    while url is not None:
        response = await api.get(url)
        rows = _csv(response)
        assert rows[0][0] == "customer_id"
        seen.extend(row[0] for row in rows[1:])
        pages += 1
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
        if link:
            assert "@" not in link  # the cursor is opaque: no guest's address in a URL
    assert seen == ids
    assert pages == 3
    members = f"/v1/stores/{store_id}/audiences/all_customers/members"
    too_big = await api.get(members, params={"limit": 10_001})
    assert too_big.status_code == 422
    forged = await api.get(members, params={"cursor": "%%%"})
    assert forged.status_code == 422
    assert forged.json()["errors"][0]["field"] == "cursor"

"""The per-flow report's `since`, through the notifier's routes and PostgreSQL: any instant a datetime can
carry is answered; one whose offset puts it outside years 1-9999 in UTC is refused naming it, not a 500 from
the database driver (found by schemathesis against the segmenter's periods, round 19)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.entrypoints.routes import router
from shared.stores import StoreConfig, StoreRegistry
from shared.web import install_error_handlers

pytestmark = pytest.mark.integration

API_KEY = "test-flows-key"


@pytest.fixture
async def api(engine: AsyncEngine, store_id: str) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.state.engine = engine
    app.state.stores = StoreRegistry(
        [StoreConfig.model_validate({"store_id": store_id, "name": "Test", "api_key": API_KEY})]
    )
    app.include_router(router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://notifier/v1/stores/{store_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-05:00", "9999-12-31T18:59:59-05:00"]
)
async def test_any_instant_since_is_answered(api: httpx.AsyncClient, since: str) -> None:
    response = await api.get("/flows", params={"since": since})
    assert response.status_code == 200, response.text
    assert {f["flow"] for f in response.json()} >= {"welcome", "abandoned_cart"}


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_a_since_outside_the_years_a_datetime_holds_is_422_naming_it(
    api: httpx.AsyncClient, since: str
) -> None:
    response = await api.get("/flows", params={"since": since})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["since"]

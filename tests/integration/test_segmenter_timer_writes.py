"""A timer round writes what its decisions changed, as a consumer's batch does: the rows a fired timer leaves
as they were (a customer's orders and history when only a cart is abandoned) are not written again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from shared.funnel_rules import FunnelRules
from shared.registry_checks import sha256_hex
from shared.stores import StoreConfig, StoreRegistry
from tests.builders import segmenter_event

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def versions(engine: AsyncEngine, store_id: str) -> dict[str, Any]:
    """Each row's xmin (the transaction that wrote its current version) and the history rows' ids."""
    out: dict[str, Any] = {}
    async with engine.connect() as conn:
        for table in ("profiles", "orders", "identities"):
            rows = await conn.execute(
                text(f"SELECT xmin::text FROM segmenter.{table} WHERE store_id = :s ORDER BY 1"),
                {"s": store_id},
            )
            out[table] = list(rows.scalars())
        rows = await conn.execute(
            text("SELECT id FROM segmenter.transitions WHERE store_id = :s ORDER BY id"), {"s": store_id}
        )
        out["transitions"] = list(rows.scalars())
        rows = await conn.execute(
            text("SELECT kind FROM segmenter.timers WHERE store_id = :s ORDER BY kind"), {"s": store_id}
        )
        out["timers"] = list(rows.scalars())
    return out


async def test_an_abandoned_cart_rewrites_the_profile_but_not_its_orders_or_history(
    engine: AsyncEngine, store_id: str
) -> None:
    store = StoreConfig(
        store_id=store_id,
        name="Test",
        api_key_sha256=sha256_hex("k"),
        funnel=FunnelRules.model_validate({"cart_abandonment": 20}),
    )
    stores = StoreRegistry([store])
    who = {"store_customer_id": "c1", "email": "c1@x.io"}
    placed = {"order_id": "o1", "total": "10.00", "currency": "EUR", "line_items": [{"product_id": "p1"}]}
    opened = {"cart_id": "k1", "currency": "EUR", "total": "30.00", "line_items": [{"product_id": "p7"}]}
    await FunnelProcessor(engine, stores)(
        [
            segmenter_event(store_id, "order_placed", T0, who, placed),
            segmenter_event(store_id, "cart_updated", T0 + timedelta(seconds=5), who, opened),
        ]
    )
    before = await versions(engine, store_id)
    assert before["orders"]
    assert before["transitions"]
    assert "cart:k1" in before["timers"]

    # The worker serves every store: other tests' timers may fire too; only this store's rows are read.
    worker = TimerWorker(engine, stores, lambda: T0 + timedelta(minutes=5))
    while await worker.fire_due():
        pass

    after = await versions(engine, store_id)
    assert "cart:k1" not in after["timers"]
    assert after["profiles"] != before["profiles"]  # the cart is abandoned: the profile changed
    assert after["orders"] == before["orders"]
    assert after["transitions"] == before["transitions"]
    async with engine.connect() as conn:
        abandoned = await conn.execute(
            text(
                "SELECT count(*) FROM segmenter.outbox WHERE convert_from(key, 'UTF8') LIKE :p "
                "AND convert_from(value, 'UTF8') LIKE '%cart_abandoned%'"
            ),
            {"p": f"{store_id}:%"},
        )
        assert abandoned.scalar() == 1

"""How a batch's writes reach PostgreSQL (service_layer/write_set.py): after the profiles, the writes that
need no other's rows go as one statement; a batch that merges then repoints the absorbed customers' rows,
those just written too, and writes the survivors' histories after that. Statements seen by asyncpg's query
logger on the service's own connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.funnel_rules import FunnelRules
from shared.registry_checks import sha256_hex
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreConfig, StoreRegistry
from tests.builders import segmenter_event

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
WRITTEN = ("identities", "orders", "copurchases", "timers", "transitions", "outbox")


@pytest.fixture
async def logged(migrated_url: str) -> AsyncIterator[tuple[AsyncEngine, list[str]]]:
    """An engine whose connections log every statement they send (asyncpg's query logger)."""
    engine = create_async_engine(migrated_url)
    sent: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _log(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    yield engine, sent
    await engine.dispose()


def _processor(engine: AsyncEngine, store_id: str) -> FunnelProcessor:
    rules = FunnelRules.model_validate({"cart_abandonment": 20})
    store = StoreConfig(store_id=store_id, name="Test", api_key_sha256=sha256_hex("k"), funnel=rules)
    return FunnelProcessor(engine, StoreRegistry([store]))


def _order(store_id: str, who: dict[str, Any], order_id: str, at: datetime) -> StorefrontEvent:
    items = [{"product_id": p, "price": "10.00", "title": p.upper()} for p in ("p1", "p2")]
    payload = {"order_id": order_id, "total": "20.00", "currency": "EUR", "line_items": items}
    return segmenter_event(store_id, "order_placed", at, who, payload)


def _cart(store_id: str, who: dict[str, Any], at: datetime) -> StorefrontEvent:
    payload = {"cart_id": "k1", "currency": "EUR", "total": "30.00", "line_items": [{"product_id": "p7"}]}
    return segmenter_event(store_id, "cart_updated", at, who, payload)


def _writes(sent: list[str]) -> list[set[str]]:
    """The tables each statement sent wrote to (of those written after the profiles), in order."""
    out = []
    for sql in sent:
        verbs = ("INSERT INTO", "UPDATE", "DELETE FROM")
        tables = {t for t in WRITTEN for verb in verbs if f"{verb} segmenter.{t} " in sql}
        if tables:
            out.append(tables)
    return out


async def _rows(engine: AsyncEngine, store_id: str) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "identities": "SELECT identifier, customer_id FROM segmenter.identities WHERE store_id = :s",
        "orders": "SELECT order_id, customer_id, total FROM segmenter.orders WHERE store_id = :s",
        "copurchases": "SELECT product_id, other_product_id, orders, title FROM segmenter.copurchases "
        "WHERE store_id = :s",
        "timers": "SELECT customer_id, kind FROM segmenter.timers WHERE store_id = :s",
        "transitions": "SELECT customer_id, dimension, to_value FROM segmenter.transitions "
        "WHERE store_id = :s",
        "profiles": "SELECT customer_id, stage, orders_count, merged_into FROM segmenter.profiles "
        "WHERE store_id = :s",
    }
    async with engine.connect() as conn:
        return {
            name: sorted(tuple(r) for r in (await conn.execute(text(q), {"s": store_id})).all())
            for name, q in queries.items()
        }


async def _outbox(engine: AsyncEngine, store_id: str, customer_id: str) -> int:
    """How many funnel events of this customer the outbox holds."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM segmenter.outbox WHERE key = :k"),
            {"k": f"{store_id}:{customer_id}".encode()},
        )
        return int(found.scalar_one())


async def test_a_batch_without_merges_writes_the_rest_in_one_statement(
    logged: tuple[AsyncEngine, list[str]], store_id: str
) -> None:
    engine, sent = logged
    who = {"store_customer_id": "c1", "email": "c1@x.io"}
    batch = [_order(store_id, who, "o1", T0), _cart(store_id, who, T0 + timedelta(minutes=1))]
    await _processor(engine, store_id)(batch)

    # One statement wrote all six tables; none other wrote any of them.
    assert _writes(sent) == [set(WRITTEN)]
    rows = await _rows(engine, store_id)
    assert rows["identities"] == [("email:c1@x.io", "c1"), ("id:c1", "c1"), ("order:o1", "c1")]
    assert [r[:2] for r in rows["orders"]] == [("o1", "c1")]
    assert rows["copurchases"] == [("p1", "p2", 1, "P2"), ("p2", "p1", 1, "P1")]
    assert ("c1", "cart:k1") in rows["timers"]
    assert ("c1", "stage", "first_time") in rows["transitions"]
    assert rows["profiles"] == [("c1", "first_time", 1, None)]
    assert await _outbox(engine, store_id, "c1") > 0


async def test_a_merging_batch_repoints_after_the_one_statement_and_writes_histories_last(
    logged: tuple[AsyncEngine, list[str]], store_id: str
) -> None:
    """The same customer's events, once in batches that merge no one and once each batch with the merge of
    another shopper added: the same rows for that customer, and the merged shoppers' rows all moved."""
    engine, sent = logged
    plain, merging = f"{store_id}a", f"{store_id}b"
    who = {"store_customer_id": "c1", "email": "c1@x.io"}

    def history(store: str) -> list[list[StorefrontEvent]]:
        return [
            [_order(store, who, "o1", T0), _cart(store, who, T0 + timedelta(minutes=1))],
            [_order(store, who, "o2", T0 + timedelta(days=2))],
            [_cart(store, who, T0 + timedelta(days=3)), _order(store, who, "o3", T0 + timedelta(days=4))],
        ]

    for batch in history(plain):
        await _processor(engine, plain)(batch)
    # Each batch: one statement after the profiles, the history in it.
    assert [w >= {"identities", "transitions", "outbox"} for w in _writes(sent)] == [True] * 3
    sent.clear()
    for n, batch in enumerate(history(merging)):
        anon = {"anonymous_id": f"a-{n}"}
        linked = {"anonymous_id": f"a-{n}", "store_customer_id": f"m-{n}"}
        merge = [
            _order(merging, anon, f"x{n}", T0 - timedelta(minutes=3)),
            _cart(merging, anon, T0 - timedelta(minutes=2)),
            segmenter_event(merging, "customer_upserted", T0 - timedelta(minutes=1), linked),
        ]
        await _processor(engine, merging)(merge + batch)
    # Each batch: the one statement without the history, the repointing (an UPDATE of three tables and
    # the absorbed timers' DELETE), then the histories.
    repoint = {"transitions", "orders", "identities", "timers"}
    writes = _writes(sent)
    assert len(writes) == 9
    for one, moved, histories in zip(writes[::3], writes[1::3], writes[2::3], strict=True):
        assert one >= {"identities", "orders", "timers", "outbox"}
        assert "transitions" not in one
        assert (moved, histories) == (repoint, {"transitions"})

    # Rows of c1, by their first column: the customer, an identifier or an order id.
    mine = {"c1", "email:c1@x.io", "id:c1", "order:o1", "order:o2", "order:o3", "o1", "o2", "o3"}
    a, b = await _rows(engine, plain), await _rows(engine, merging)
    for table, rows in a.items():
        if table != "copurchases":
            assert rows == [r for r in b[table] if r[0] in mine], table
    # The shoppers' orders held the same two products.
    assert b["copurchases"] == [(p, q, 2 * n, title) for p, q, n, title in a["copurchases"]]
    assert await _outbox(engine, plain, "c1") == await _outbox(engine, merging, "c1") > 0
    # What the absorbed shoppers' events wrote in the same statement as their merge now is the survivors'.
    for n in range(3):
        assert (f"x{n}", f"m-{n}", Decimal("20.00")) in b["orders"]
        assert (f"anon:a-{n}", f"m-{n}") in b["identities"]
        assert (f"m-{n}", "stage", "first_time") in b["transitions"]
        assert (f"anon:a-{n}", "prospect", 0, f"m-{n}") in b["profiles"]
    # By their customer column.
    held = [r for r in b["timers"] + b["transitions"] if r[0].startswith("anon:")]
    held += [r for r in b["orders"] + b["identities"] if r[1].startswith("anon:")]
    assert held == []

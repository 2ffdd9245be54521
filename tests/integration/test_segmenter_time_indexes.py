"""The store-and-time indexes of transitions and orders after migration 0005, against a real PostgreSQL:
partial (`WHERE <time> IS NOT NULL`), so that a probe for one customer's rows cannot take them, and still
the ones the reports' date ranges read, with their bound parameters planned generically (the predicate is
implied by any strict comparison of the time, whatever its value)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import reports
from shared.raw_sql import fetch
from tests.integration.stale_statistics import grown_after_analyze

pytestmark = pytest.mark.integration

STORE = "demo"
DAYS = 400
PER_DAY = 50  # customers, each with an order and a transition that day
END = datetime(2026, 11, 30, tzinfo=UTC)


async def _fill(conn: AsyncConnection) -> None:
    """PER_DAY customers a day over DAYS days, each with one order and one transition; another store too."""
    rows = "generate_series(0, CAST(:n AS int) - 1) g"
    at = "CAST(:end AS timestamptz) - (g / CAST(:per_day AS int)) * interval '1 day'"
    for store in (STORE, "other"):
        values = {"store": store, "n": DAYS * PER_DAY, "per_day": PER_DAY, "end": END}
        await conn.execute(
            text(
                "INSERT INTO segmenter.transitions (store_id, customer_id, dimension, from_value, to_value, "
                f"reason, event_id, occurred_at) SELECT :store, 'c' || g, 'stage', 'prospect', 'first_time', "
                f"'order', 'e' || g, {at} FROM {rows}"
            ),
            values,
        )
        await conn.execute(
            text(
                "INSERT INTO segmenter.orders (store_id, order_id, customer_id, placed_at, total, refunded, "
                f"counts) SELECT :store, 'o' || g, 'c' || g, {at}, 20, 0, true FROM {rows}"
            ),
            values,
        )


@pytest.fixture
async def filled(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """A database of its own, filled, then analyzed (statistics as a store in steady state has them)."""
    async with grown_after_analyze(
        postgres_server, "time_indexes", ("transitions", "orders"), _fill
    ) as engine:
        yield engine


async def test_the_time_indexes_are_partial_on_their_time(filled: AsyncEngine) -> None:
    async with filled.connect() as conn:
        rows = await fetch(
            conn,
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'segmenter' "
            "AND indexname IN ('ix_transitions_store_time', 'ix_orders_store_time')",
        )
    definitions = {r["indexname"]: r["indexdef"] for r in rows}
    assert definitions["ix_transitions_store_time"].endswith(
        "(store_id, occurred_at) WHERE (occurred_at IS NOT NULL)"
    )
    assert definitions["ix_orders_store_time"].endswith("(store_id, placed_at) WHERE (placed_at IS NOT NULL)")


async def test_the_reports_date_ranges_read_the_time_indexes_in_generic_plans(filled: AsyncEngine) -> None:
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    start = END - timedelta(days=7)
    event.listen(filled.sync_engine, "before_cursor_execute", capture)
    try:
        async with filled.connect() as conn:
            daily = await reports.daily_transitions(conn, STORE, start, END)
            await reports.retention(conn, STORE, start, END, timedelta(days=90))
    finally:
        event.remove(filled.sync_engine, "before_cursor_execute", capture)
    # Seven days of PER_DAY transitions: the end's own day is outside [start, end).
    assert sum(n for *_, n in daily) == 7 * PER_DAY
    ranged = [(s, p) for s, p in sent if "occurred_at >=" in s or "placed_at >" in s]  # ">" or ">="
    assert len(ranged) >= 3, sent  # the daily transitions, retention's two ends and its period
    async with filled.connect() as conn:
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        for statement, parameters in ranged:
            plan = "\n".join(r[0] for r in await fetch(conn, f"EXPLAIN {statement}", *parameters))
            index = "ix_transitions_store_time" if "transitions" in statement else "ix_orders_store_time"
            assert index in plan, (statement, plan)

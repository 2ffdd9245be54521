"""The segmenter's merges and deleted timers against a real PostgreSQL: the right rows move or go, and the
statements probe the customers' indexes however stale the tables' statistics are.

A new store's tables grow by tens of thousands of rows before their first automatic ANALYZE. Planned from
the statistics of the tables' first moments, the repointing of a batch's absorbed customers (one statement,
four tables) was four hash joins over sequential scans of the whole tables, and a batch's deleted timers
one more: 18-22 ms a batch of 3,000 events at the end of the benchmark's replay and growing with the tables,
for a few hundred absorbed ids that held no rows at all (bench/README.md, thirty-first round)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import repository
from shared.raw_sql import fetch
from tests.integration.stale_statistics import grown_after_analyze

pytestmark = pytest.mark.integration

STORE = "demo"
GROWN = 30_000  # customers added after the tables' statistics were taken, each with a row in every table
AT = datetime(2026, 11, 2, 12, tzinfo=UTC)
TABLES = ("transitions", "orders", "identities", "timers")

# One row of customer `'cust-' || g` in each table (g from generate_series).
_ROWS = {
    "transitions": "(store_id, customer_id, dimension, from_value, to_value, reason, event_id, occurred_at) "
    "SELECT :store, 'cust-' || g, 'stage', 'prospect', 'first_time', 'order', 'e' || g, :at",
    "orders": "(store_id, order_id, customer_id, placed_at, total, refunded, counts) "
    "SELECT :store, 'o' || g, 'cust-' || g, :at, 10, 0, true",
    "identities": "(store_id, identifier, customer_id) SELECT :store, 'anon:a' || g, 'cust-' || g",
    "timers": "(store_id, customer_id, kind, due_at) SELECT :store, 'cust-' || g, 'health', :at",
}


async def _add_customers(conn: AsyncConnection, first: int, last: int) -> None:
    numbers = "generate_series(CAST(:first AS int), CAST(:last AS int)) g"
    for table, rows in _ROWS.items():
        await conn.execute(
            text(f"INSERT INTO segmenter.{table} {rows} FROM {numbers}"),
            {"store": STORE, "at": AT, "first": first, "last": last},
        )


@pytest.fixture
async def grown(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """Tables analyzed holding 5 customers, grown to GROWN since."""

    async def early(conn: AsyncConnection) -> None:
        await _add_customers(conn, 1, 5)

    async def later(conn: AsyncConnection) -> None:
        await _add_customers(conn, 6, GROWN)

    async with grown_after_analyze(postgres_server, "repoint", TABLES, early, later) as engine:
        yield engine


async def _owners(conn: AsyncConnection, table: str) -> dict[str, int]:
    """customer -> how many rows of `table` are theirs."""
    rows = await conn.execute(
        text(f"SELECT customer_id, count(*) FROM segmenter.{table} GROUP BY customer_id")
    )
    return {customer: n for customer, n in rows.all()}


async def _plan(conn: AsyncConnection, write: repository.Write) -> str:
    rows = await fetch(conn, f"EXPLAIN {write.statement.sql}", *write.statement.args(write.values))
    return "\n".join(row[0] for row in rows)


async def test_a_merge_moves_the_absorbed_rows_and_drops_their_timers(grown: AsyncEngine) -> None:
    # cust-7 into cust-8, cust-9 into cust-8 after it; cust-10 into a customer new in the batch; an absorbed
    # id that holds no rows (a shopper new in the batch) changes nothing.
    merges = [
        (STORE, "cust-7", "cust-8"),
        (STORE, "cust-9", "cust-8"),
        (STORE, "cust-10", "new-1"),
        (STORE, "anon:fresh", "cust-11"),
    ]
    write = repository.repoint_write(merges)
    assert write is not None
    async with grown.begin() as conn:
        await write.send(conn)
        for table in ("transitions", "orders", "identities"):
            owners = await _owners(conn, table)
            assert (owners.get("cust-7"), owners.get("cust-9"), owners.get("cust-10")) == (None, None, None)
            assert (owners["cust-8"], owners["new-1"], owners["cust-11"], owners["cust-12"]) == (3, 1, 1, 1)
            assert sum(owners.values()) == GROWN
        # The absorbed customers' timers go (the survivor's decisions set its own); the others stay.
        timers = await _owners(conn, "timers")
        assert not {"cust-7", "cust-9", "cust-10"} & timers.keys()
        assert (timers["cust-8"], timers["cust-11"], len(timers)) == (1, 1, GROWN - 3)


async def test_a_batch_deletes_exactly_its_gone_timers(grown: AsyncEngine) -> None:
    later = AT + timedelta(days=30)
    write = repository.timers_write(
        {
            (STORE, "cust-20", "health"): None,
            (STORE, "cust-21", "health"): None,
            (STORE, "cust-22", "birthday"): None,  # a kind it does not have
            (STORE, "cust-23", "health"): later,
        }
    )
    assert write is not None
    async with grown.begin() as conn:
        await write.send(conn)
        rows = await conn.execute(text("SELECT customer_id, due_at FROM segmenter.timers"))
        due = {customer: at for customer, at in rows.all()}
    assert not {"cust-20", "cust-21"} & due.keys()
    assert (due["cust-22"], due["cust-23"], len(due)) == (AT, later, GROWN - 2)


async def test_the_merges_and_the_timers_probe_the_indexes_instead_of_reading_the_tables(
    grown: AsyncEngine,
) -> None:
    absorbed = [(STORE, f"cust-{i}", f"cust-{i + 1000}") for i in range(100, 160)]
    repoint = repository.repoint_write(absorbed)
    gone = repository.timers_write({(STORE, f"cust-{i}", "health"): None for i in range(100, 160)})
    assert repoint is not None
    assert gone is not None
    async with grown.connect() as conn:
        plans = {"repoint": await _plan(conn, repoint), "timers": await _plan(conn, gone)}
    for table in TABLES:
        assert f"Seq Scan on {table}" not in plans["repoint"], plans["repoint"]
    for index in ("ix_transitions_customer", "ix_orders_customer", "ix_identities_customer", "timers_pkey"):
        assert index in plans["repoint"], plans["repoint"]
    assert "Seq Scan on timers" not in plans["timers"], plans["timers"]
    assert "timers_pkey" in plans["timers"], plans["timers"]

"""The segmenter's merges, deleted timers and replaced histories against a real PostgreSQL: the right rows
move or go, and the statements probe the customers' indexes however stale the tables' statistics are.

A new store's tables grow by tens of thousands of rows before their first automatic ANALYZE. Planned from
the statistics of the tables' first moments, the repointing of a batch's absorbed customers (one statement,
four tables) was four hash joins over sequential scans of the whole tables, and a batch's deleted timers
one more: 18-22 ms a batch of 3,000 events at the end of the benchmark's replay and growing with the tables,
for a few hundred absorbed ids that held no rows at all (bench/README.md, thirty-first round). A batch's
replaced histories were a merge join that read and sorted the whole transitions table (37-43 ms a batch).
And in a new store's first batches, before any ANALYZE, a probe by `customer_id = <key>` could take the
store's time index instead of the customer's, reading every row of the store for each key, until migration
0005 made that index serve time ranges only (thirty-second round)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import repository
from services.segmenter.domain.profile import Profile, Transition
from shared.raw_sql import fetch
from tests.integration.stale_statistics import grown_after_analyze

pytestmark = pytest.mark.integration

STORE = "demo"
GROWN = 30_000  # customers added after the tables' statistics were taken, each with a row in every table
AT = datetime(2026, 11, 2, 12, tzinfo=UTC)
TABLES = ("transitions", "orders", "identities", "timers")
BATCH = range(100, 1_400)  # about as many customers as a batch of 3,000 events of the benchmark's mix names

# One row of customer `'cust-' || g` in each table (g from generate_series).
_ROWS = {
    "transitions": "(store_id, customer_id, dimension, from_value, to_value, reason, event_id, occurred_at) "
    "SELECT :store, 'cust-' || g, 'stage', 'prospect', 'first_time', 'order', 'e' || g, "
    "CAST(:at AS timestamptz) - g * interval '1 minute'",
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


@pytest.fixture(params=[(5, GROWN)], ids=lambda n: f"analyzed-at-{n[0]}")
async def grown(
    request: pytest.FixtureRequest, postgres_server: PostgresServer
) -> AsyncIterator[AsyncEngine]:
    """Tables analyzed holding the first of `request.param`'s customers (never analyzed if none), grown to
    the second since (5 and GROWN unless a test asks for others)."""
    analyzed, grown_to = request.param

    async def early(conn: AsyncConnection) -> None:
        if analyzed:
            await _add_customers(conn, 1, analyzed)

    async def later(conn: AsyncConnection) -> None:
        await _add_customers(conn, analyzed + 1, grown_to)

    analyzing = TABLES if analyzed else ()
    async with grown_after_analyze(postgres_server, "repoint", analyzing, early, later) as engine:
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


# Never analyzed and 1,200 customers in (a new store's first batches), a probe by equality found the store's
# time index on transitions as cheap as the customer's, and took it without migration 0005; analyzed with a
# few rows and grown to many, a join looked cheapest.
STALE = pytest.mark.parametrize(
    "grown", [(0, 1_200), (5, GROWN)], indirect=True, ids=["never-analyzed", "analyzed-at-5"]
)


@STALE
async def test_the_merges_and_the_timers_probe_the_indexes_instead_of_reading_the_tables(
    grown: AsyncEngine,
) -> None:
    absorbed = [(STORE, f"cust-{i}", f"cust-{i + 1000}") for i in BATCH]
    repoint = repository.repoint_write(absorbed)
    gone = repository.timers_write({(STORE, f"cust-{i}", "health"): None for i in BATCH})
    assert repoint is not None
    assert gone is not None
    async with grown.connect() as conn:
        plans = {"repoint": await _plan(conn, repoint), "timers": await _plan(conn, gone)}
    for table in TABLES:
        assert f"Seq Scan on {table}" not in plans["repoint"], plans["repoint"]
    for index in ("ix_transitions_customer", "ix_orders_customer", "ix_identities_customer", "timers_pkey"):
        assert index in plans["repoint"], plans["repoint"]
    for index in ("ix_transitions_store_time", "ix_orders_store_time", "identities_pkey"):
        assert index not in plans["repoint"], plans["repoint"]
    assert "Seq Scan on timers" not in plans["timers"], plans["timers"]
    assert "timers_pkey" in plans["timers"], plans["timers"]


def _history(customer: str, *steps: tuple[str, str, int]) -> Profile:
    """A profile whose history is the stage steps (from, to, day of November)."""
    return Profile(
        store_id=STORE,
        customer_id=customer,
        transitions=tuple(
            Transition(
                dimension="stage",
                from_value=was,
                to_value=now,
                reason="order",
                occurred_at=AT.replace(day=day),
                event_id=f"{customer}-{day}",
            )
            for was, now, day in steps
        ),
    )


async def test_a_batch_replaces_exactly_its_changed_histories(grown: AsyncEngine) -> None:
    write = repository.histories_write(
        [
            _history("cust-30", ("prospect", "first_time", 3), ("first_time", "repeat", 9)),
            _history("cust-31"),  # a history that lost its only step (a late refund)
            _history("cust-32", ("prospect", "first_time", 4)).model_copy(update={"merged_into": "cust-33"}),
            _history("new-3", ("prospect", "first_time", 5)),  # no rows yet
        ]
    )
    assert write is not None
    async with grown.begin() as conn:
        await write.send(conn)
        owners = await _owners(conn, "transitions")
        rows = await conn.execute(
            text(
                "SELECT to_value, occurred_at, event_id FROM segmenter.transitions "
                "WHERE customer_id = 'cust-30' ORDER BY occurred_at"
            )
        )
        cust_30 = [tuple(r) for r in rows.all()]
    assert (owners["cust-30"], owners["new-3"], owners["cust-29"], owners["cust-33"]) == (2, 1, 1, 1)
    assert not {"cust-31", "cust-32"} & owners.keys()
    assert sum(owners.values()) == GROWN  # one more for cust-30 and new-3, one less for cust-31 and cust-32
    assert cust_30 == [
        ("first_time", AT.replace(day=3), "cust-30-3"),
        ("repeat", AT.replace(day=9), "cust-30-9"),
    ]


@STALE
async def test_the_histories_probe_the_customer_index_instead_of_reading_the_table(
    grown: AsyncEngine,
) -> None:
    write = repository.histories_write([_history(f"cust-{i}", ("prospect", "first_time", 3)) for i in BATCH])
    assert write is not None
    async with grown.connect() as conn:
        plan = await _plan(conn, write)
    assert "Seq Scan on transitions" not in plan, plan
    assert "ix_transitions_customer" in plan, plan
    assert "ix_transitions_store_time" not in plan, plan

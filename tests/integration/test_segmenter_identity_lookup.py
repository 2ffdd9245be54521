"""The segmenter's identity look-up against a real PostgreSQL: the same answers, and one probe of the primary
key per pair however stale the table's statistics are.

A store's identities table grows by tens of thousands of rows between two automatic ANALYZEs. As a plain
join of the batch's pairs with the table, the look-up was planned from the statistics of the table's first
moments: a hash of the pairs and a sequential scan of the whole table for every batch, the statement
PostgreSQL spent most of its time on at 1,000 events/s (bench/README.md, twenty-ninth round). Before its
first ANALYZE, a probe by the key's equalities alone took the customer index (the store's column alone) and
read every identity of the store for each pair (bench/README.md, thirty-fifth round)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import repository
from services.segmenter.adapters.unnest import params
from shared.raw_sql import fetch
from tests.integration.stale_statistics import Fill, grown_after_analyze

pytestmark = pytest.mark.integration

STORE = "demo"
GROWN = 30_000  # rows added after the table's statistics were taken
NEW = 3_000  # a new store's rows before the table's first ANALYZE (about a backlog's first batch)


@pytest.fixture
async def grown(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """An identities table analyzed holding 5 rows of another store, grown by GROWN rows since."""

    async def early(conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO segmenter.identities (store_id, identifier, customer_id) "
                "SELECT 'other', 'email:early' || g, 'c' || g FROM generate_series(1, 5) g"
            )
        )

    later = _customers(GROWN)
    async with grown_after_analyze(postgres_server, "identities", ("identities",), early, later) as engine:
        yield engine


@pytest.fixture
async def never_analyzed(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """An identities table holding a new store's first batches (NEW rows), never analyzed yet."""
    async with grown_after_analyze(postgres_server, "identities_new", (), _customers(NEW)) as engine:
        yield engine


def _customers(n: int) -> Fill:
    """The store's customers `cust-1` to `cust-<n>`, each found by one anonymous id (`_known`)."""

    async def fill(conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO segmenter.identities (store_id, identifier, customer_id) "
                "SELECT :store, 'anon:' || md5(g::text), 'cust-' || g FROM generate_series(1, :n) g"
            ),
            {"store": STORE, "n": n},
        )

    return fill


async def _plan(engine: AsyncEngine, keys: list[tuple[str, str]], explain: str = "EXPLAIN") -> str:
    statement = repository._LOAD_IDENTITIES_RAW
    async with engine.connect() as conn:
        rows = await fetch(
            conn, f"{explain} {statement.sql}", *statement.args(params(repository._IDENTITY_KEY, keys))
        )
    return "\n".join(row[0] for row in rows)


def _known(i: int) -> tuple[str, str]:
    """The pair the fixture stored for customer `cust-<i>` (its identifier is md5(i), as SQL wrote it)."""
    return STORE, f"anon:{hashlib.md5(str(i).encode(), usedforsecurity=False).hexdigest()}"


async def test_a_batch_finds_its_identities_and_only_those(grown: AsyncEngine) -> None:
    numbers = range(1, GROWN + 1, GROWN // 50)
    known = {_known(i): f"cust-{i}" for i in numbers} | {("other", "email:early3"): "c3"}
    # Absent pairs whose next key in the primary key's order is another pair: the seek finds that one, and
    # the look-up must not take it (a near miss, the last identifier of a store, another store's).
    unknown = [(STORE, "anon:none"), ("other", "email:early1x"), (STORE, "zzz"), ("elsewhere", "anon:1")]
    async with grown.connect() as conn:
        found = await repository.load_identities(conn, [*known, *unknown, next(iter(known))])
    assert found.identities == known
    assert found.forgotten == {}


async def test_the_look_up_probes_the_primary_key_instead_of_reading_the_table(grown: AsyncEngine) -> None:
    plan = await _plan(grown, [_known(i) for i in range(1, 61)])
    assert "identities_pkey" in plan, plan
    assert "Seq Scan on identities" not in plan, plan


async def test_before_the_first_analyze_the_look_up_probes_the_primary_key(
    never_analyzed: AsyncEngine,
) -> None:
    keys = [_known(i) for i in range(1, NEW + 1, 10)]
    plan = await _plan(never_analyzed, keys)
    assert "identities_pkey" in plan, plan
    assert "ix_identities_customer" not in plan, plan
    assert "Seq Scan on identities" not in plan, plan
    async with never_analyzed.connect() as conn:
        found = await repository.load_identities(conn, [*keys, (STORE, "anon:none")])
    assert found.identities == {k: f"cust-{i}" for k, i in zip(keys, range(1, NEW + 1, 10), strict=True)}


ERASED_AT = datetime(2026, 3, 1, tzinfo=UTC)


async def _forget(engine: AsyncEngine, store_id: str, identifiers: list[str], customer_id: str) -> None:
    """Forgotten look-ups as an erasure leaves them (`repository.forget_identities`: the digest alone)."""
    async with engine.begin() as conn:
        for identifier in identifiers:
            await conn.execute(
                text(
                    "INSERT INTO segmenter.forgotten_identities (store_id, digest, customer_id, erased_at) "
                    "VALUES (:store, sha256(convert_to(:identifier, 'UTF8')), :customer, :at)"
                ),
                {"store": store_id, "identifier": identifier, "customer": customer_id, "at": ERASED_AT},
            )


async def test_the_same_statement_finds_the_unknown_emails_and_anonymous_ids_an_erasure_forgot(
    grown: AsyncEngine,
) -> None:
    # Forgotten by an erasure: an email and an anonymous id no look-up knows (found as forgotten); one a
    # customer has since been known by again (its look-up wins); the same email in another store (not this
    # store's); a store customer id and an order id, kinds an erasure never forgets (never looked for).
    known = _known(7)
    await _forget(
        grown, STORE, ["email:gone@example.com", "anon:gone", known[1], "id:gone", "order:gone"], "x"
    )
    await _forget(grown, "other", ["email:elsewhere@example.com"], "y")
    wanted = [
        known,
        (STORE, "email:gone@example.com"),
        (STORE, "anon:gone"),
        (STORE, "email:elsewhere@example.com"),
        (STORE, "id:gone"),
        (STORE, "order:gone"),
        (STORE, "email:new@example.com"),
    ]
    async with grown.connect() as conn:
        found = await repository.load_identities(conn, wanted)
    assert found.identities == {known: "cust-7"}
    gone = repository.Forgotten("x", ERASED_AT)
    assert found.forgotten == {(STORE, "email:gone@example.com"): gone, (STORE, "anon:gone"): gone}


async def test_the_forgotten_look_up_probes_only_the_unknown_emails_and_anonymous_ids(
    grown: AsyncEngine,
) -> None:
    await _forget(grown, STORE, ["email:gone@example.com"], "x")
    known = [_known(i) for i in range(1, 41)]
    unknown = [(STORE, f"email:new{i}@example.com") for i in range(7)] + [
        (STORE, f"anon:new{i}") for i in range(5)
    ]
    others = [(STORE, f"order:{i}") for i in range(9)] + [(STORE, f"id:{i}") for i in range(3)]
    plan = await _plan(grown, [*known, *unknown, *others], "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)")
    # The probe of the forgotten table (and its digest) runs once for each unknown email or anonymous id.
    probes = [line for line in plan.splitlines() if "forgotten_identities" in line and "Scan" in line]
    assert len(probes) == 1, plan
    loops = re.search(r"loops=(\d+)", probes[0])
    assert loops is not None, plan
    assert int(loops.group(1)) == len(unknown), plan

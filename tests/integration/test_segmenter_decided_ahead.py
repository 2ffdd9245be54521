"""Batches decided ahead (services/segmenter/entrypoints/processor.py, `_decide_ahead`), against a real
PostgreSQL: while a batch's writes run, the next batch (its claim sent ahead) is decided from what those
writes will leave, and once the batch before has committed it is written only if the rows it was decided
from still hold what it read. The state is the one the batches give one after another; a profile another
writer changed in between has the batch decided again; a batch that fails takes the next one's claim and
decisions back with it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bench.replay_check import digest_tables
from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters import repository
from services.segmenter.adapters.profile_cache import ProfileCache
from services.segmenter.entrypoints.claim_ahead import ClaimAhead
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.profiles_ahead import ProfilesAhead
from services.segmenter.entrypoints.timers import TimerWorker
from services.segmenter.service_layer.write_set import Changes
from shared.db import upgrade_to_head
from shared.settings import REPO_ROOT
from shared.storefront_event_structs import StorefrontEvent
from tests.integration.test_segmenter_claim_ahead import claim_held_open, decided_outcomes, orders_of
from tests.integration.test_segmenter_engine import _history, cart, event, order, pending_timers, registry
from tests.integration.test_segmenter_profile_cache import stored

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def grew(before: dict[str, float], outcome: str) -> float:
    return decided_outcomes().get(outcome, 0.0) - before.get(outcome, 0.0)


@contextlib.asynccontextmanager
async def migrated_database(server: PostgresServer, prefix: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A migrated database of the test's own: its whole segmenter schema is compared with another's."""
    url = server.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "segmenter" / "migrations", url)
    engine = create_async_engine(url)
    try:
        yield url, engine
    finally:
        await engine.dispose()


@pytest.fixture
async def fresh_database(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with migrated_database(postgres_server, "ahead") as database:
        yield database


async def handled_with_the_next_sent(
    processor: FunnelProcessor,
    batch: Sequence[StorefrontEvent],
    following: Sequence[StorefrontEvent] | None,
) -> None:
    """As the consumer hands a backlog's batch over: the next one is sent ahead while it is handled."""
    handling = asyncio.create_task(processor(batch))
    await asyncio.sleep(0)  # the batch has taken its claim sent ahead, as the consumer's does
    if following is not None:
        processor.send_ahead(following)
    await asyncio.wait_for(handling, 30)


async def as_a_backlog(processor: FunnelProcessor, batches: Sequence[Sequence[StorefrontEvent]]) -> None:
    for i, batch in enumerate(batches):
        await handled_with_the_next_sent(processor, batch, batches[i + 1] if i + 1 < len(batches) else None)


async def one_after_another(
    engine: AsyncEngine, store_id: str, batches: Sequence[Sequence[StorefrontEvent]]
) -> None:
    """Each batch handled after the one before committed, nothing ahead."""
    processor = FunnelProcessor(engine, registry(store_id))
    for batch in batches:
        await processor(batch)


def copies(batches: Sequence[Sequence[StorefrontEvent]]) -> list[list[StorefrontEvent]]:
    """The same events as other objects (the claims sent ahead tell batches apart by their objects)."""
    return [[msgspec.structs.replace(e) for e in batch] for batch in batches]


async def same_state_both_ways(
    store_id: str,
    batches: list[list[StorefrontEvent]],
    ahead: tuple[str, AsyncEngine],
    plain: tuple[str, AsyncEngine],
) -> None:
    processor = FunnelProcessor(ahead[1], registry(store_id), hold_connection=True, claim_ahead=True)
    try:
        await as_a_backlog(processor, batches)
    finally:
        await processor.close()
    await one_after_another(plain[1], store_id, copies(batches))
    with_ahead: dict[str, bytes] = {}
    without: dict[str, bytes] = {}
    await digest_tables(ahead[0], with_ahead)
    await digest_tables(plain[0], without)
    assert with_ahead.keys() == without.keys()
    for table in without:
        assert with_ahead[table] == without[table], table
    assert without["profiles"]
    assert without["identities"]
    assert without["outbox"]


class DecisionsAhead:
    """`FunnelProcessor._decide_ahead` patched to tell when a batch's decisions ahead are done (`done` is
    set; the caller may put a fresh event there for the next batch)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.done = asyncio.Event()
        decide_ahead = FunnelProcessor._decide_ahead

        async def noted(processor: FunnelProcessor, *args: Any) -> Any:
            done = self.done
            try:
                return await decide_ahead(processor, *args)
            finally:
                done.set()

        monkeypatch.setattr(FunnelProcessor, "_decide_ahead", noted)


@pytest.fixture
def written_after_the_next_is_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch's writes wait until the next batch, if one is decided ahead from them, has been decided
    (2 s at most: the last batch has none sent after it). That batch then reads every row as it stood before
    this one wrote anything: the schedule in which what it takes from this batch's results matters most."""
    work_ahead = ClaimAhead.work_ahead
    write = Changes.write
    decisions = DecisionsAhead(monkeypatch)
    registered = False

    def registering(self: ClaimAhead[Any, Any, Any, Any], work: Any) -> None:
        nonlocal registered
        registered = True
        decisions.done = asyncio.Event()
        work_ahead(self, work)

    async def waiting(self: Changes, conn: AsyncConnection) -> int:
        nonlocal registered
        if registered:
            registered = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(decisions.done.wait(), 2)
        return await write(self, conn)

    monkeypatch.setattr(ClaimAhead, "work_ahead", registering)
    monkeypatch.setattr(Changes, "write", waiting)


@pytest.fixture
async def second_database(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with migrated_database(postgres_server, "plain") as database:
        yield database


@pytest.mark.parametrize("seed", [3, 17])
@pytest.mark.usefixtures("written_after_the_next_is_decided")
async def test_a_backlog_decided_ahead_leaves_every_table_as_batches_one_after_another_do(
    seed: int,
    store_id: str,
    fresh_database: tuple[str, AsyncEngine],
    second_database: tuple[str, AsyncEngine],
) -> None:
    rng = random.Random(seed)
    events = _history(store_id, 50, rng)
    # Every seventh event delivered twice; the halves interleaved, so that one customer's events (and an
    # anonymous shopper's and their sign-up) fall in consecutive batches.
    doubled = [e for i, e in enumerate(events) for e in ([e] if i % 7 else [e, msgspec.structs.replace(e)])]
    mixed = doubled[::2] + doubled[1::2]
    batches = [mixed[i : i + 12] for i in range(0, len(mixed), 12)]
    before = decided_outcomes()
    await same_state_both_ways(store_id, batches, fresh_database, second_database)
    # Most batches were decided ahead (not the first, nor the first ones that found no stored profile).
    assert grew(before, "used") >= len(batches) // 2
    assert grew(before, "stale") == 0


@pytest.mark.usefixtures("written_after_the_next_is_decided")
async def test_a_merge_then_late_events_under_the_absorbed_identifiers_decided_ahead(
    store_id: str,
    fresh_database: tuple[str, AsyncEngine],
    second_database: tuple[str, AsyncEngine],
) -> None:
    anon = {"anonymous_id": "a-1"}
    link = {"store_customer_id": "u-1", "anonymous_id": "a-1", "email": "zoe@example.com"}
    batches = [
        [cart(store_id, anon, "k1", T0), order(store_id, anon, "o1", T0 + timedelta(minutes=5))],
        # Merges the anonymous profile into u-1, while the next batch is decided.
        [event(store_id, "customer_upserted", None, T0 + timedelta(minutes=6), **link)],
        # Each under one identifier: the email the second batch told (first, so that no event before it in
        # the batch finds u-1's profile and its identifiers), then two the anonymous profile held.
        [
            order(store_id, {"email": "zoe@example.com"}, "o2", T0 + timedelta(days=3)),
            cart(store_id, anon, "k2", T0 + timedelta(days=1)),
            event(
                store_id,
                "order_refunded",
                {"order_id": "o1", "amount": "5.00", "currency": "EUR"},
                T0 + timedelta(days=2),
                placed_order_id="o1",
            ),
        ],
        [order(store_id, {"store_customer_id": "u-1"}, "o3", T0 + timedelta(days=30))],
    ]
    before = decided_outcomes()
    await same_state_both_ways(store_id, batches, fresh_database, second_database)
    # The second and third batches' writes had the next ones decided ahead; the first found no stored
    # profile, so its transaction (the version its rows will have) was not known before it wrote.
    assert grew(before, "used") == 2
    u1 = await stored(fresh_database[1], store_id, "u-1")
    assert u1.orders_count == 3
    assert (await stored(fresh_database[1], store_id, "anon:a-1")).merged_into == "u-1"


@pytest.mark.usefixtures("written_after_the_next_is_decided")
async def test_a_look_up_no_profile_lists_follows_its_customer_merged_by_the_batch_before(
    store_id: str,
    fresh_database: tuple[str, AsyncEngine],
    second_database: tuple[str, AsyncEngine],
) -> None:
    # A merge moves every look-up of the absorbed customer, whether its profile lists the identifier or not
    # (repository.repoint_write); here one it does not list, written directly in both databases.
    for _, engine in (fresh_database, second_database):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO segmenter.identities (store_id, identifier, customer_id) "
                    "VALUES (:s, 'email:old@example.com', 'anon:a-2')"
                ),
                {"s": store_id},
            )
    anon = {"anonymous_id": "a-2"}
    link = {"store_customer_id": "u-2", "anonymous_id": "a-2"}
    batches = [
        [cart(store_id, anon, "k1", T0)],
        [cart(store_id, anon, "k2", T0 + timedelta(minutes=1))],
        [event(store_id, "customer_upserted", None, T0 + timedelta(minutes=6), **link)],
        [order(store_id, {"email": "old@example.com"}, "o1", T0 + timedelta(days=1))],
    ]
    before = decided_outcomes()
    await same_state_both_ways(store_id, batches, fresh_database, second_database)
    assert grew(before, "used") == 2
    assert (await stored(fresh_database[1], store_id, "u-2")).orders_count == 1


async def test_a_profile_written_by_another_between_the_batches_has_the_next_decided_again(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True, claim_ahead=True)
    other = FunnelProcessor(engine, registry(store_id))  # another instance, or a rebalance's new owner
    ann = {"store_customer_id": "ann", "email": "ann@x.io"}
    bob = {"store_customer_id": "bob", "email": "bob@x.io"}
    first = [order(store_id, ann, "a1", T0), order(store_id, bob, "b1", T0)]
    second = [order(store_id, ann, "a2", T0 + timedelta(days=1))]
    third = [order(store_id, ann, "a3", T0 + timedelta(days=2)), order(store_id, bob, "b2", T0)]
    try:
        before = decided_outcomes()
        await handled_with_the_next_sent(processor, first, second)
        await handled_with_the_next_sent(processor, second, third)
        # The third batch was decided from ann's profile as the second left it; another writes it before
        # the third comes.
        await asyncio.wait_for(other([order(store_id, ann, "a9", T0 + timedelta(days=9))]), 10)
        await asyncio.wait_for(processor(third), 10)
    finally:
        await processor.close()
    assert sorted(await orders_of(engine, store_id, "ann")) == ["a1", "a2", "a3", "a9"]
    assert (await stored(engine, store_id, "ann")).orders_count == 4
    assert sorted(await orders_of(engine, store_id, "bob")) == ["b1", "b2"]
    assert grew(before, "stale") == 1
    assert grew(before, "used") == 0  # (the second was not: the first found no stored profile)


async def test_after_one_found_stale_the_next_batch_is_not_decided_ahead_and_the_one_after_is(
    engine: AsyncEngine, store_id: str
) -> None:
    # PauseAhead: deciding ahead pays only while nobody else writes the same profiles in between.
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True, claim_ahead=True)
    other = FunnelProcessor(engine, registry(store_id))
    ann = {"store_customer_id": "ann", "email": "ann@x.io"}
    batches = [[order(store_id, ann, f"a{i}", T0 + timedelta(days=i))] for i in range(6)]
    try:
        await handled_with_the_next_sent(processor, batches[0], batches[1])
        await handled_with_the_next_sent(processor, batches[1], batches[2])  # the third decided ahead
        await asyncio.wait_for(other([order(store_id, ann, "x9", T0 + timedelta(days=30))]), 10)
        before = decided_outcomes()
        await handled_with_the_next_sent(processor, batches[2], batches[3])  # stale; the fourth not decided
        stale = decided_outcomes()
        await handled_with_the_next_sent(processor, batches[3], batches[4])  # the fifth decided ahead again
        paused = decided_outcomes()
        await handled_with_the_next_sent(processor, batches[4], None)
    finally:
        await processor.close()
    final = decided_outcomes()

    def between(earlier: dict[str, float], later: dict[str, float]) -> dict[str, float]:
        return {k: later[k] - earlier.get(k, 0.0) for k in later if later[k] != earlier.get(k, 0.0)}

    # The third found stale, so the fourth not decided ahead (paused), both in the third's call.
    assert between(before, stale) == {"stale": 1, "paused": 1}
    assert between(stale, paused) == {}  # the fourth, not decided ahead, has no outcome of its own
    assert between(paused, final) == {"used": 1}
    assert sorted(await orders_of(engine, store_id, "ann")) == ["a0", "a1", "a2", "a3", "a4", "x9"]


async def test_a_batch_failing_after_the_next_was_decided_ahead_takes_that_claim_back(
    engine: AsyncEngine, store_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True, claim_ahead=True)
    ann = {"store_customer_id": "ann", "email": "ann@x.io"}
    write = Changes.write
    decisions = DecisionsAhead(monkeypatch)
    failing = False

    async def fails_once_the_next_is_decided(self: Changes, conn: AsyncConnection) -> int:
        nonlocal failing
        if failing:
            failing = False
            await asyncio.wait_for(decisions.done.wait(), 10)  # the next batch was decided from these writes
            raise RuntimeError("the batch's writes failed")
        return await write(self, conn)

    monkeypatch.setattr(Changes, "write", fails_once_the_next_is_decided)
    first = [order(store_id, ann, "a1", T0)]
    second = [order(store_id, ann, "a2", T0 + timedelta(days=1))]
    third = [order(store_id, ann, "a3", T0 + timedelta(days=2))]
    try:
        await handled_with_the_next_sent(processor, first, second)
        before = decided_outcomes()
        failing = True
        with pytest.raises(RuntimeError):
            await handled_with_the_next_sent(processor, second, third)
        assert decisions.done.is_set()
        assert not failing
        # The third batch's claim is not held: it was decided from writes that never committed.
        assert not await claim_held_open(engine, third[0])
        await asyncio.wait_for(processor(second), 10)  # the consumer's retry
        await asyncio.wait_for(processor(third), 10)
    finally:
        await processor.close()
    assert grew(before, "used") == 0
    assert sorted(await orders_of(engine, store_id, "ann")) == ["a1", "a2", "a3"]
    assert (await stored(engine, store_id, "ann")).orders_count == 3


async def test_relocking_says_whether_each_row_still_holds_the_version_read(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    ann = {"store_customer_id": "ann", "email": "ann@x.io"}
    await processor([order(store_id, ann, "a1", T0), order(store_id, {"store_customer_id": "bob"}, "b1", T0)])
    keys = [(store_id, "ann"), (store_id, "bob"), (store_id, "cid")]  # cid has no profile
    async with engine.connect() as conn:
        read = await repository.read_profiles_with_versions(conn, keys, ProfileCache(10))
        await conn.rollback()
    assert set(read.versions) == {(store_id, "ann"), (store_id, "bob")}

    async def relocked(versions: dict[tuple[str, str], str]) -> bool:
        async with engine.begin() as conn:
            same, writer = await repository.relock_profiles(conn, keys, versions)
            assert writer is not None
            return same

    assert await relocked(read.versions)
    assert not await relocked({(store_id, "ann"): read.versions[(store_id, "ann")]})  # bob's row not expected
    assert not await relocked({**read.versions, (store_id, "cid"): "1"})  # cid's row expected, and gone
    async with engine.begin() as conn:  # another writer changes ann's row
        await conn.execute(
            text("UPDATE segmenter.profiles SET stage = stage WHERE store_id = :s AND customer_id = 'ann'"),
            {"s": store_id},
        )
    assert not await relocked(read.versions)


async def timers_of(engine: AsyncEngine, store_id: str, customer: str) -> list[str]:
    return sorted(kind for who, kind in await pending_timers(engine, store_id) if who == customer)


@pytest.mark.parametrize("shared", [True, False], ids=["one process", "timers apart"])
async def test_a_timer_round_leaves_a_customer_read_ahead_until_the_batch_has_locked_it(
    engine: AsyncEngine, store_id: str, shared: bool
) -> None:
    # The benchmark's backlog: carts days old, whose abandonment timers are due while the batches of the
    # same customers' later events are decided ahead (profiles_ahead.py).
    profiles_ahead = ProfilesAhead()
    processor = FunnelProcessor(
        engine, registry(store_id), hold_connection=True, claim_ahead=True, profiles_ahead=profiles_ahead
    )
    # The worker serves every store: other tests' timers may fire too; only this store's rows are read.
    timers = TimerWorker(
        engine,
        registry(store_id),
        lambda: T0 + timedelta(days=30),
        profiles_ahead=profiles_ahead if shared else None,
    )
    ann = {"store_customer_id": "ann", "email": "ann@x.io"}
    bob = {"store_customer_id": "bob", "email": "bob@x.io"}
    first = [cart(store_id, ann, "k1", T0), order(store_id, bob, "b1", T0)]
    second = [order(store_id, bob, "b2", T0 + timedelta(days=1))]
    third = [order(store_id, ann, "a1", T0 + timedelta(days=2))]
    try:
        before = decided_outcomes()
        await handled_with_the_next_sent(processor, first, second)
        await handled_with_the_next_sent(processor, second, third)  # the third read ann's profile ahead
        assert await timers_of(engine, store_id, "ann") == ["cart:k1"]
        while await timers.fire_due():
            pass
        # Shared, the round left ann's timer for later; apart, it fired: ann's cart abandoned.
        assert await timers_of(engine, store_id, "ann") == (["cart:k1"] if shared else [])
        await asyncio.wait_for(processor(third), 10)
    finally:
        await processor.close()
    assert grew(before, "stale") == (0 if shared else 1)
    assert grew(before, "used") == (1 if shared else 0)
    while await timers.fire_due():  # the batch has committed: nothing is read ahead any more
        pass
    assert "cart:k1" not in await timers_of(engine, store_id, "ann")
    assert await orders_of(engine, store_id, "ann") == ["a1"]

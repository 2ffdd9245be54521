"""Claims sent ahead (services/segmenter/entrypoints/claim_ahead.py), against a real PostgreSQL: the next
batch's claim runs in its own open transaction while the batch before is handled, and that batch then
commits on it (a claim sent from the raw messages before they are decoded as well as one sent with the
decoded batch); an event in both batches counts once; any other call first rolls the claim sent ahead back,
so a retried or isolated batch never waits on it; dropping it, closing the processor or losing its
connection leaves nothing held and nothing lost."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.devstack.postgres import PostgresServer
from services.segmenter.adapters.event_decoding import decode_decidable
from services.segmenter.entrypoints.claim_ahead import CLAIMS_AHEAD
from services.segmenter.entrypoints.processor import DECIDED_AHEAD, FunnelProcessor
from shared.db import upgrade_to_head
from shared.settings import REPO_ROOT
from shared.storefront_event_structs import StorefrontEvent
from tests.builders import contract_bytes
from tests.integration.test_segmenter_engine import (
    _drain,
    _history,
    _publish,
    _snapshot,
    _topic,
    order,
    registry,
    two_instances_and_a_stop_mid_stream,
)
from tests.integration.test_segmenter_held_connection import checked_out
from tests.integration.test_segmenter_profile_cache import stored

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def processor(engine: AsyncEngine, store_id: str) -> AsyncIterator[FunnelProcessor]:
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True, claim_ahead=True)
    yield processor
    await processor.close()


def counted(counter: Counter) -> dict[str, float]:
    """outcome -> count, of a counter labelled by outcome."""
    samples = (s for m in counter.collect() for s in m.samples)
    return {s.labels["outcome"]: s.value for s in samples if s.name.endswith("_total")}


def outcomes() -> dict[str, float]:
    return counted(CLAIMS_AHEAD)


def decided_outcomes() -> dict[str, float]:
    return counted(DECIDED_AHEAD)


def grew(before: dict[str, float], outcome: str) -> float:
    return outcomes().get(outcome, 0.0) - before.get(outcome, 0.0)


def buyer(store_id: str, name: str, n: int = 1) -> StorefrontEvent:
    who = {"store_customer_id": name, "email": f"{name}@x.io"}
    return order(store_id, who, f"{name}-o{n}", T0 + timedelta(days=n))


async def claim_held_open(engine: AsyncEngine, event: StorefrontEvent) -> bool:
    """Whether another transaction holds the event's claim uncommitted: our own insert of it must wait for
    that transaction (and gives up after 200 ms). Tried in a transaction rolled back, claiming nothing."""
    refused: DBAPIError | None = None
    async with engine.connect() as conn:
        trans = await conn.begin()
        try:
            await conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
            await conn.execute(
                text(
                    "INSERT INTO segmenter.processed_events (store_id, event_id) VALUES (:s, :e) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"s": event.store_id, "e": event.event_id},
            )
        except DBAPIError as exc:
            refused = exc
        finally:
            await trans.rollback()
    if refused is None:
        return False
    assert "lock timeout" in str(refused.orig)
    return True


async def until_held(engine: AsyncEngine, event: StorefrontEvent) -> None:
    for _ in range(100):
        if await claim_held_open(engine, event):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the claim sent ahead was not held open")


async def claimed_in_db(engine: AsyncEngine, event: StorefrontEvent) -> bool:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT 1 FROM segmenter.processed_events WHERE store_id = :s AND event_id = :e"),
            {"s": event.store_id, "e": event.event_id},
        )
        return found.first() is not None


async def orders_of(engine: AsyncEngine, store_id: str, customer: str) -> list[str]:
    return [o.order_id for o in (await stored(engine, store_id, customer)).orders]


async def decoded_and_handled(processor: FunnelProcessor, *events: StorefrontEvent) -> None:
    """What the consumer does once it has announced a batch: the messages decoded, handed over, handled."""
    decoded = [decode_decidable(contract_bytes(e)) for e in events]
    processor.send_ahead(decoded)
    await asyncio.wait_for(processor(decoded), 10)


async def test_the_next_batch_claims_in_its_own_transaction_and_then_commits_on_it(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    before = outcomes()
    await processor([buyer(store_id, "ann")])
    second = [buyer(store_id, "bob")]
    processor.send_ahead(second)
    # Claimed, not committed: the claim's transaction waits, open, for its batch.
    await until_held(engine, second[0])
    assert not await claimed_in_db(engine, second[0])
    await processor(second)
    assert await claimed_in_db(engine, second[0])
    assert await orders_of(engine, store_id, "bob") == ["bob-o1"]
    assert grew(before, "used") == 1
    assert grew(before, "rolled_back") == 0


async def test_an_event_in_two_batches_counts_once_when_the_second_claims_ahead(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    before = outcomes()
    ann = buyer(store_id, "ann")
    bob = buyer(store_id, "bob")
    again = msgspec.structs.replace(ann)  # ann's order delivered a second time, in the next batch
    cid = buyer(store_id, "cid")
    handling = asyncio.create_task(processor([ann, bob]))
    await asyncio.sleep(0)  # the first batch has sent its claim
    processor.send_ahead([again, cid])
    await asyncio.wait_for(handling, 10)
    await asyncio.wait_for(processor([again, cid]), 10)
    assert await orders_of(engine, store_id, "ann") == ["ann-o1"]
    assert (await stored(engine, store_id, "ann")).orders_count == 1
    assert await orders_of(engine, store_id, "cid") == ["cid-o1"]
    assert grew(before, "used") == 1


async def test_a_claim_announced_from_the_raw_messages_is_the_one_their_decoded_batch_commits_on(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    # As the consumer does: the messages' claim is sent from their bytes, before they are decoded; the
    # decoded batch, handed over after, takes that claim over instead of claiming again.
    before = outcomes()
    ann, bob = buyer(store_id, "ann"), buyer(store_id, "bob")
    processor.announce([contract_bytes(ann), contract_bytes(bob)])
    await until_held(engine, ann)
    await decoded_and_handled(processor, ann, bob)
    assert [await orders_of(engine, store_id, n) for n in ("ann", "bob")] == [["ann-o1"], ["bob-o1"]]
    assert (grew(before, "used"), grew(before, "rolled_back")) == (1, 0)


async def test_a_claim_announced_for_a_message_that_does_not_decode_is_rolled_back_and_made_again(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    # A message whose ids read but whose event the contract refuses (dead-lettered by the consumer): the
    # decoded batch lacks it, so the claim announced (which holds its id) is rolled back, and the batch
    # claims its own events. The refused event's id is not recorded: a corrected copy would still count.
    before = outcomes()
    ann, bob = buyer(store_id, "ann"), buyer(store_id, "bob")
    refused = msgspec.json.encode({"event_id": "broken-1", "store_id": store_id, "type": "order_placed"})
    with pytest.raises(ValidationError):
        decode_decidable(refused)
    processor.announce([contract_bytes(ann), refused, contract_bytes(bob)])
    await until_held(engine, ann)
    await decoded_and_handled(processor, ann, bob)
    assert [await orders_of(engine, store_id, n) for n in ("ann", "bob")] == [["ann-o1"], ["bob-o1"]]
    assert (grew(before, "used"), grew(before, "rolled_back")) == (1, 1)
    async with engine.connect() as conn:
        kept = await conn.execute(
            text("SELECT 1 FROM segmenter.processed_events WHERE store_id = :s AND event_id = 'broken-1'"),
            {"s": store_id},
        )
        assert kept.first() is None


async def test_messages_whose_ids_do_not_read_announce_nothing(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    before = outcomes()
    ann = buyer(store_id, "ann")
    processor.announce([contract_bytes(ann), b"not json"])
    processor.announce([contract_bytes(ann), None])
    # Nested deeper than msgspec reads, in a field it would skip: refused by the contract's decoder later.
    deep = b'{"event_id": "e", "store_id": "s", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    processor.announce([contract_bytes(ann), deep])
    await asyncio.sleep(0.2)
    assert not await claim_held_open(engine, ann)
    await asyncio.wait_for(processor([ann]), 10)
    assert await orders_of(engine, store_id, "ann") == ["ann-o1"]
    assert grew(before, "used") == 0
    assert grew(before, "rolled_back") == 0


async def test_a_call_for_other_events_rolls_the_claim_sent_ahead_back_first(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    # As a retried batch, or a bad message's isolation, calls with other events than were sent ahead: the
    # call claims events the claim sent ahead holds, and would wait for it forever if it were kept.
    before = outcomes()
    ann, bob = buyer(store_id, "ann"), buyer(store_id, "bob")
    processor.send_ahead([ann, bob])
    await until_held(engine, ann)
    await asyncio.wait_for(processor([ann]), 10)
    await asyncio.wait_for(processor([bob]), 10)
    assert await orders_of(engine, store_id, "ann") == ["ann-o1"]
    assert await orders_of(engine, store_id, "bob") == ["bob-o1"]
    assert grew(before, "rolled_back") == 1
    assert grew(before, "used") == 0


async def test_a_claim_sent_ahead_waits_for_a_batch_claiming_on_its_own(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    # The first batch claims on the kept connection, with no claim sent ahead for it; the next one's claim,
    # sent while it runs, must not overtake it (an event in both would then be the second's, and the first
    # would wait for it forever), and goes out once the first batch is done.
    before = outcomes()
    ann = buyer(store_id, "ann")
    again = msgspec.structs.replace(ann)
    handling = asyncio.create_task(processor([ann]))
    await asyncio.sleep(0)  # the first batch has started, its claim not yet sent
    processor.send_ahead([again])
    await asyncio.wait_for(handling, 10)
    await asyncio.wait_for(processor([again]), 10)
    assert (await stored(engine, store_id, "ann")).orders_count == 1
    assert grew(before, "used") == 1


async def test_a_claim_dropped_is_rolled_back_and_another_instance_takes_its_events_at_once(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    ann = buyer(store_id, "ann")
    processor.send_ahead([ann])
    await until_held(engine, ann)
    await processor.drop_ahead()  # a rebalance cut the batch: its partition's new owner reads it
    assert not await claim_held_open(engine, ann)
    other = FunnelProcessor(engine, registry(store_id))
    await asyncio.wait_for(other([ann]), 10)
    assert await orders_of(engine, store_id, "ann") == ["ann-o1"]


async def test_closing_rolls_the_claim_sent_ahead_back_and_gives_its_connections_back(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id), hold_connection=True, claim_ahead=True)
    before = checked_out(engine)
    await processor([buyer(store_id, "ann")])
    bob = buyer(store_id, "bob")
    processor.send_ahead([bob])
    await until_held(engine, bob)
    assert checked_out(engine) == before + 2  # the kept connection and the claim's
    await processor.close()
    assert checked_out(engine) == before
    assert not await claim_held_open(engine, bob)
    assert not await claimed_in_db(engine, bob)


async def test_a_claim_whose_connection_died_before_its_batch_came_is_made_again_and_commits(
    engine: AsyncEngine, store_id: str, processor: FunnelProcessor
) -> None:
    bob = buyer(store_id, "bob")
    processor.send_ahead([bob])
    await until_held(engine, bob)
    async with engine.connect() as conn:
        # As a restart, or idle_in_transaction_session_timeout, would end it.
        ended = (
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state = 'idle in transaction'"
                )
            )
        ).all()
        assert ended
    await asyncio.sleep(0.1)
    await asyncio.wait_for(processor([bob]), 10)
    assert await orders_of(engine, store_id, "bob") == ["bob-o1"]


async def drain(
    kafka_bootstrap: str,
    topic: str,
    group: str,
    processor: FunnelProcessor,
    total: int,
    engine: AsyncEngine,
    store_id: str,
    *,
    ahead: bool,
) -> None:
    """Consume the topic's backlog in full batches of 25, each next batch's claim sent ahead if `ahead`."""
    try:
        await _drain(
            kafka_bootstrap,
            topic,
            group,
            processor,
            total,
            engine,
            store_id,
            max_records=25,
            prepare=processor.send_ahead if ahead else None,
            unprepare=processor.drop_ahead if ahead else None,
            announce=processor.announce if ahead else None,
        )
    finally:
        await processor.close()


async def test_a_backlog_with_redelivered_events_gives_the_same_state_with_claims_sent_ahead(
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,
    engine: AsyncEngine,
    postgres_server: PostgresServer,
    store_id: str,
) -> None:
    events = _history(store_id, 40, random.Random(11))
    # Every seventh event delivered twice, the copy some records later: often in the next batch.
    published = [e for i, e in enumerate(events) for e in ([e] if i % 7 else [e, e])]
    published = published[::2] + published[1::2]
    # One partition: both consumers then see the events in one order (across partitions the order in which
    # a customer's anonymous and identified events are read may differ from run to run, and with it which
    # profiles a merge leaves behind).
    topic = await _topic(kafka_bootstrap, 1)
    await _publish(producer, topic, published)
    stores = registry(store_id)
    before = outcomes()
    decided_before = decided_outcomes()
    processor = FunnelProcessor(engine, stores, hold_connection=True, claim_ahead=True)
    await drain(kafka_bootstrap, topic, "ahead", processor, len(published), engine, store_id, ahead=True)
    assert grew(before, "used") > 0  # the backlog's batches did run on claims sent ahead
    # and were decided while the batch before was written (test_segmenter_decided_ahead.py)
    assert decided_outcomes().get("used", 0.0) > decided_before.get("used", 0.0)
    with_ahead = await _snapshot(engine, store_id)

    url = postgres_server.create_database(f"ahead_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "segmenter" / "migrations", url)
    empty = create_async_engine(url)
    try:
        plain = FunnelProcessor(empty, stores, hold_connection=True)
        await drain(kafka_bootstrap, topic, "plain", plain, len(published), empty, store_id, ahead=False)
        without = await _snapshot(empty, store_id)
    finally:
        await empty.dispose()
    assert with_ahead[0] == without[0]
    assert with_ahead[1] == without[1]
    assert len(without[0]) >= 40


async def test_two_instances_sending_claims_ahead_share_the_partitions_and_a_stop_loses_nothing(
    kafka_bootstrap: str, producer: AIOKafkaProducer, engine: AsyncEngine, store_id: str
) -> None:
    # The one leaving may hold a claim sent ahead for partitions the other takes over: it is rolled back
    # when it stops (`unprepare`), or the other's claims of those events would wait for it.
    await two_instances_and_a_stop_mid_stream(
        kafka_bootstrap, producer, engine, store_id, group="two-ahead", claim_ahead=True
    )

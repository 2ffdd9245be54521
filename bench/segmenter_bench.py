"""segmenter: events/s fully processed (DB commit, then offsets) from a pre-filled topic, and beside it two
limits: the same rows written by the segmenter's own upsert statements run by pgbench (no Python), and by
raw batched upserts from asyncpg (one statement per table per batch)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.cpu import CpuSample, per_event, sampler
from bench.isolated import run_isolated
from bench.limits import (
    PGBENCH_SCHEMA,
    SEGMENTER_WRITES,
    pgbench_figures,
    pgbench_script,
    run_pgbench,
    statement_parameters,
)
from bench.settle import settle
from bench.stack import PARTITIONS, BenchStack, Service
from bench.workload import Step, Storefront, canonical
from services.segmenter.adapters import tables as segmenter_tables
from services.segmenter.adapters.unnest import _element_type, as_blobs, blob
from services.segmenter.domain.funnel import event_identifiers
from services.segmenter.settings import SegmenterSettings
from shared.events import OrderPlacedEvent, encode_event
from shared.kafka import FUNNEL_EVENTS, STOREFRONT_EVENTS, build_producer
from shared.settings import KafkaSettings
from shared.storefront_event_structs import from_model

# The segmenter's default batch (SEGMENTER_MAX_BATCH): the limit writes the same rows in as many batches.
BATCH: int = SegmenterSettings.model_fields["segmenter_max_batch"].default

# (key, value) of each record, and what the upsert limit needs of each event: id, first identifier, order id.
Prefill = tuple[list[tuple[bytes, bytes]], list[tuple[str, str, str | None]]]


def build_prefill(path: Path, count: int) -> int:
    """The realistic mix as canonical events (3 Segment-sourced to 1 Shopify-sourced), cached on disk."""
    if path.is_file():
        with path.open("rb") as f:
            return len(pickle.load(f)[0])  # noqa: S301 - our own cache file
    store = Storefront(seed=21, run="prefill")
    steps: list[Step] = [*store.segment_calls(count * 3 // 4), *store.shopify_webhooks(count // 4)]
    steps.sort(key=lambda s: s.at)
    events = canonical(steps)[:count]
    records = [(e.partition_key.encode(), encode_event(e)) for e in events]
    meta = [
        (
            e.event_id,
            (event_identifiers(from_model(e)) or [""])[0],
            e.payload.order_id if isinstance(e, OrderPlacedEvent) else None,
        )
        for e in events
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump((records, meta), f)
    return len(records)


async def produce_prefill(bootstrap: str, path: Path) -> int:
    with path.open("rb") as f:
        records, _ = pickle.load(f)  # noqa: S301 - our own cache file
    producer = build_producer(KafkaSettings(kafka_bootstrap_servers=bootstrap), "bench-prefill")
    await producer.start()
    try:
        for start in range(0, len(records), 5000):
            acks = [
                await producer.send(STOREFRONT_EVENTS, value=v, key=k)
                for k, v in records[start : start + 5000]
            ]
            await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return len(records)


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        # The benchmark creates every topic itself, with PARTITIONS partitions.
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        # aiokafka 0.14 lets a group-less consumer's stop() raise the CancelledError of its own task.
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


async def wait_until_committed(
    bootstrap: str, group: str, within_seconds: float, cpu: Callable[[], CpuSample] | None = None
) -> dict[str, Any]:
    """Poll the group's committed offsets until they reach the topic's end; the throughput is taken from
    the first commit to the last, so process start-up and the group join are not counted. With `cpu`, the
    CPU of the stack's parts over that same window, an event (bench/cpu.py), under "cpu"."""
    ends = await _end_offsets(bootstrap, STOREFRONT_EVENTS)
    total = sum(ends.values())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        first: tuple[float, int] | None = None
        first_cpu: CpuSample | None = None
        trace: list[tuple[float, int]] = []
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            except KafkaError:  # the group does not exist until the segmenter joins
                offsets = {}
            done = sum(
                o.offset for tp, o in offsets.items() if tp.topic == STOREFRONT_EVENTS and o.offset > 0
            )
            now = time.monotonic()
            trace.append((round(now, 2), done))
            if done and first is None:
                first = (now, done)
                first_cpu = cpu() if cpu is not None else None
            if done >= total and first is not None:
                seconds = now - first[0]
                result = {"events": total, "events_per_s": (total - first[1]) / seconds if seconds else 0.0,
                          "seconds": seconds, "trace": trace[-50:]}  # fmt: skip
                if cpu is not None and first_cpu is not None:
                    result["cpu"] = per_event(first_cpu, cpu(), total - first[1])
                return result
            await asyncio.sleep(0.1)
        raise TimeoutError(f"group {group} did not commit {total} events within {within_seconds} s")
    finally:
        await admin.close()


async def _funnel_values(bootstrap: str) -> list[tuple[bytes, bytes]]:
    ends = await _end_offsets(bootstrap, FUNNEL_EVENTS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(ends))
        values: list[tuple[bytes, bytes]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                values.extend((r.key or b"", r.value or b"") for r in records)
        return values
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


# The segmenter's tables, with the conflict target of the upserts it runs on them.
_CONFLICTS: dict[str, tuple[str, ...] | None] = {
    "processed_events": ("store_id", "event_id"),
    "profiles": ("store_id", "customer_id"),
    "identities": ("store_id", "identifier"),
    "orders": ("store_id", "order_id"),
    "timers": ("store_id", "customer_id", "kind"),
    "copurchases": ("store_id", "product_id", "other_product_id"),
    "transitions": None,
    "outbox": None,
}


async def postgres_upsert_limit(
    database_url: str, bootstrap: str, prefill: Path, work_dir: Path | None = None
) -> dict[str, Any]:
    """Write as many rows into each table as the segmenter run wrote (Postgres's own counters: inserted +
    updated), taken from what it left in its tables (so the same shapes and sizes, a first write of a key
    an insert, a later one an update, in the same proportion), in as many batches as the run had (one per
    1,000 events), each one transaction of one `INSERT ... SELECT FROM unnest(...)` per table, into copies
    of its tables with the same indexes. No reads, no decisions: the floor under the segmenter.

    With a `work_dir`, pgbench then writes the very same batches with the segmenter's own statements
    (bench/limits.py), into fresh copies of the tables: under "pgbench" in the result."""
    with prefill.open("rb") as f:
        _, meta = pickle.load(f)  # noqa: S301 - our own cache file
    funnel = await _funnel_values(bootstrap)
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        counters = {
            r["relname"]: r["n_tup_ins"] + r["n_tup_upd"]
            for r in await conn.fetch(
                "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'segmenter'"
            )
        }
        await conn.execute("DROP SCHEMA IF EXISTS bench_limit CASCADE; CREATE SCHEMA bench_limit")
        columns: dict[str, list[tuple[str, str]]] = {}
        for table in _CONFLICTS:
            await _copy_table(conn, "bench_limit", table)
            columns[table] = [
                (r["attname"], r["type"])
                for r in await conn.fetch(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a "
                    "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                    "AND a.attidentity = '' AND NOT a.atthasdef ORDER BY a.attnum",
                    f"segmenter.{table}",
                )
            ]
        names = {t: [c for c, _ in cols] for t, cols in columns.items()}
        source: dict[str, list[tuple[Any, ...]]] = {}
        for table in _CONFLICTS:
            selected = ", ".join(names[table])
            query = f"SELECT {selected} FROM segmenter.{table}"  # noqa: S608
            source[table] = [tuple(r) for r in await conn.fetch(query)]
        # The outbox was emptied by the relay as it went: its rows are what reached funnel-events.
        source["outbox"] = [("funnel-events", key, value) for key, value in funnel]
        source["processed_events"] = [("demo", event_id) for event_id, _, _ in meta]
        statements = {}
        for table, keys in _CONFLICTS.items():
            unnest = ", ".join(f"${i + 1}::{t}[]" for i, (_, t) in enumerate(columns[table]))
            sql = (
                f"INSERT INTO bench_limit.{table} ({', '.join(names[table])}) SELECT * FROM unnest({unnest})"  # noqa: S608
            )
            if table == "processed_events":
                sql += " ON CONFLICT (store_id, event_id) DO NOTHING RETURNING store_id, event_id"
            elif keys:
                updates = ", ".join(f"{c} = excluded.{c}" for c in names[table] if c not in keys)
                sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
            statements[table] = await conn.prepare(sql)

        batches = max(1, -(-len(meta) // BATCH))
        plan: dict[str, list[list[tuple[Any, ...]]]] = {}
        for table, keys in _CONFLICTS.items():
            rows = source[table]
            wanted = counters.get(table, 0) if table != "processed_events" else len(rows)
            if not rows or not wanted:
                continue
            # The rows again and again (first an insert, then updates), spread evenly over the batches;
            # a key at most once per statement, as Postgres requires of ON CONFLICT DO UPDATE.
            sequence = [rows[i % len(rows)] for i in range(wanted)]
            per_batch = []
            for b in range(batches):
                chunk = sequence[b * wanted // batches : (b + 1) * wanted // batches]
                if keys:
                    index = [names[table].index(k) for k in keys]
                    chunk = list({tuple(r[i] for i in index): r for r in chunk}.values())
                per_batch.append(chunk)
            plan[table] = per_batch

        rows_written = 0
        started = time.perf_counter()
        for b in range(batches):
            async with conn.transaction():
                for table, per_batch in plan.items():
                    chunk = per_batch[b]
                    if chunk:
                        await statements[table].fetch(*(list(col) for col in zip(*chunk, strict=True)))
                        rows_written += len(chunk)
        elapsed = time.perf_counter() - started
        result: dict[str, Any] = {
            "rows_per_s": rows_written / elapsed,
            "events_per_s": len(meta) / elapsed,
            "rows": rows_written,
            "rows_per_event": rows_written / len(meta),
            "segmenter_rows_by_table": counters,
            "seconds": elapsed,
        }
        if work_dir is not None:
            await _stage_pgbench_batches(conn, plan, names, batches)
            # Copies made with LIKE are logged tables, as the segmenter's are: checked, not assumed.
            unlogged = await conn.fetch("SELECT relname FROM pg_class WHERE relpersistence = 'u'")
            if unlogged:
                raise RuntimeError(f"unlogged tables in the limit's database: {[r[0] for r in unlogged]}")
            tables = [t for t in SEGMENTER_WRITES if t in plan]
            ran = run_pgbench(database_url, pgbench_script(tables), batches, work_dir)
            result["pgbench"] = pgbench_figures(ran, len(meta), rows_written, batches)
    finally:
        await conn.close()
    return result


async def _copy_table(conn: asyncpg.Connection, schema: str, table: str) -> None:
    """An empty copy of the segmenter's table in `schema`: its columns, defaults, keys and indexes (`LIKE ...
    INCLUDING ALL`) and its storage parameters (a fillfactor), which LIKE leaves out, so PostgreSQL alone
    writes pages laid out as the segmenter's are."""
    await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE segmenter.{table} INCLUDING ALL)")
    options = await conn.fetchval(
        "SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE oid = $1::regclass",
        f"segmenter.{table}",
    )
    if options:
        await conn.execute(f"ALTER TABLE {schema}.{table} SET ({options})")


async def _stage_pgbench_batches(
    conn: asyncpg.Connection,
    plan: dict[str, list[list[tuple[Any, ...]]]],
    names: dict[str, list[str]],
    batches: int,
) -> None:
    """Fresh copies of the tables for pgbench to write into, and the batches' rows as one row per batch of
    the statements' parameters (`<table>__<parameter>`: a column's array, typed as the segmenter's
    statements cast it, or a blob and its places), numbered from 1 by a sequence the script draws from."""
    schema = PGBENCH_SCHEMA
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    await conn.execute(f"CREATE SEQUENCE {schema}.next_batch")
    tables = [t for t in SEGMENTER_WRITES if t in plan]
    # (parameter, its type, its cast from asyncpg's parameter): a column's array, or a blob column's bytes
    # and their places (unnest.blob: integer literals, read by the segmenter's cast), as the segmenter sends.
    staged: list[tuple[str, str, str]] = []
    # Per table, each column's place in the plan's rows and whether it is a blob: worked out once.
    read: dict[str, list[tuple[str, int, bool]]] = {}
    for table in tables:
        await _copy_table(conn, schema, table)
        definition = getattr(segmenter_tables, table)
        columns = SEGMENTER_WRITES[table][1]
        blobs = as_blobs(definition, columns)
        read[table] = [(c, names[table].index(c), c in blobs) for c in columns]
        for parameter in statement_parameters(table):
            if parameter in blobs:
                staged.append((f"{table}__{parameter}", "bytea", "bytea"))
            elif parameter not in columns:  # a blob's places
                staged.append((f"{table}__{parameter}", "integer[]", "text::integer[]"))
            else:
                kind = f"{_element_type(definition, parameter)}[]"
                staged.append((f"{table}__{parameter}", kind, kind))
    typed = ", ".join(f"{name} {kind}" for name, kind, _ in staged)
    await conn.execute(f"CREATE TABLE {schema}.batches (batch bigint PRIMARY KEY, {typed})")
    placeholders = ", ".join(f"${i + 2}::{cast}" for i, (_, _, cast) in enumerate(staged))
    insert = f"INSERT INTO {schema}.batches VALUES ($1, {placeholders})"  # noqa: S608 - our own names
    for b in range(batches):
        values: dict[str, Any] = {}
        for table in tables:
            for column, index, is_blob in read[table]:
                column_values = [row[index] for row in plan[table][b]]
                if is_blob:
                    # A document as its UTF-8 text (asyncpg reads jsonb as str), bytes as they are.
                    encoded = [v.encode() if isinstance(v, str) else v for v in column_values]
                    values.update({f"{table}__{k}": v for k, v in blob(column, encoded).items()})
                else:
                    values[f"{table}__{column}"] = column_values
        await conn.execute(insert, b + 1, *(values[name] for name, _, _ in staged))


def prefilled(stack: BenchStack, events: int, say: Any) -> Path:
    """The mix of `events` canonical events in storefront-events (recreated), and its cache file."""
    # The cache is named by its generator's version: bump it when bench/workload.py changes the mix.
    prefill = stack.root / f"prefill-v2-{events}.pickle"
    run_isolated(build_prefill, prefill, events)
    stack.recreate_topics([STOREFRONT_EVENTS])
    produced = run_isolated(produce_prefill, stack.kafka.bootstrap_servers, prefill)
    say(f"pre-filled {STOREFRONT_EVENTS} with {produced} events")
    return prefill


def _stack_pids(stack: BenchStack, segmenters: Sequence[Service]) -> Mapping[str, list[int]]:
    """The process trees whose CPU a segmenter run is charged (bench/cpu.py): the segmenter processes,
    PostgreSQL's postmaster (its backends are its children) and the Kafka broker."""
    named = {
        "segmenter": [s.process.pid() for s in segmenters],
        "postgres": [stack.postgres.process.pid()],
        "kafka": [stack.kafka.process.pid()],
    }
    return {name: [p for p in pids if p is not None] for name, pids in named.items()}


def segmenter_with_limits(
    stack: BenchStack, r: int, prefill: Path, say: Any
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """One segmenter run over the pre-filled topic (fresh database and group), then the Postgres limits of
    the rows it wrote: (the run, the limits, its peak memory)."""
    stack.recreate_topics([FUNNEL_EVENTS])
    url = stack.fresh_database(f"bench_segmenter_{r}", ("segmenter",))
    group = f"bench-segmenter-{r}-{int(time.time())}"
    settled = settle()  # the pre-fill's and the run before's writes on disk first (bench/settle.py)
    # Not waiting for readiness: the clock is the group's commits, which start before /readyz says so.
    segmenter = stack.start_service("segmenter", stack.env(url, SEGMENTER_GROUP_ID=group), timeout=0)
    try:
        cpu = sampler(functools.partial(_stack_pids, stack, [segmenter]))
        result = asyncio.run(wait_until_committed(stack.kafka.bootstrap_servers, group, 1800, cpu))
        peak = segmenter.peak_rss_mb()
        # Let the relay publish what the run wrote: the limit writes those outbox rows too.
        time.sleep(3)
    finally:
        stack.stop_service(segmenter)
    result["settled"] = settled
    say(f"segmenter run {r + 1}: {result['events_per_s']:.0f} events/s")
    settled = settle()
    limit = run_isolated(postgres_upsert_limit, url, stack.kafka.bootstrap_servers, prefill, stack.root)
    limit["settled"] = settled
    say(f"postgres upsert limit run {r + 1}: asyncpg {limit['rows_per_s']:.0f} rows/s "
        f"({limit['events_per_s']:.0f} events/s); pgbench {limit['pgbench']['rows_per_s']:.0f} rows/s "
        f"({limit['pgbench']['events_per_s']:.0f} events/s)")  # fmt: skip
    return result, limit, peak


def run_segmenter(stack: BenchStack, runs: int, events: int, say: Any) -> dict[str, Any]:
    prefill = prefilled(stack, events, say)
    out: dict[str, list[Any]] = {"segmenter": [], "limit": [], "peak_rss_mb": []}
    for r in range(runs):
        result, limit, peak = segmenter_with_limits(stack, r, prefill, say)
        out["segmenter"].append(result)
        out["limit"].append(limit)
        out["peak_rss_mb"].append(peak)
    # The same work shared by two segmenter processes in one group (6 partitions), beside the one-process
    # headline: on two cores they compete with PostgreSQL and Kafka for the CPU.
    out["segmenter_2_instances"] = []
    for r in range(runs):
        url = stack.fresh_database(f"bench_segmenter_pair_{r}", ("segmenter",))
        group = f"bench-segmenter-pair-{r}-{int(time.time())}"
        env = stack.env(url, SEGMENTER_GROUP_ID=group)
        settled = settle()
        pair = [stack.start_service("segmenter", env, timeout=0, instance=i) for i in range(2)]
        try:
            cpu = sampler(functools.partial(_stack_pids, stack, pair))
            result = asyncio.run(wait_until_committed(stack.kafka.bootstrap_servers, group, 1800, cpu))
        finally:
            for segmenter in pair:
                stack.stop_service(segmenter)
        result["settled"] = settled
        out["segmenter_2_instances"].append(result)
        say(f"2 segmenter instances run {r + 1}: {result['events_per_s']:.0f} events/s")
    return out

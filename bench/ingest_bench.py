"""ingest: single Shopify webhooks/s and Segment batch events/s with response latency, and beside them two
limits: Kafka's own producer performance tool, and the raw aiokafka producer, both with the ingest's own
settings sending the same canonical events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.httpload import closed_loop, encode_request
from bench.limits import kafka_tool_limit
from bench.stack import BenchStack, Service
from bench.stats import percentile
from bench.workload import Storefront, canonical, segment_batch_body
from shared.events import encode_event
from shared.kafka import STOREFRONT_EVENTS, build_producer
from shared.settings import KafkaSettings

WEBHOOK_POOL = 20_000
BATCH_CALLS = 100  # analytics-python's default upload size
BATCH_POOL = 400
# Records ProducerPerformance sends per run, and the distinct payloads it picks them from.
KAFKA_TOOL_RECORDS = 500_000
KAFKA_TOOL_PAYLOADS = 20_000
LIMIT_TOPIC = "bench-produce-limit"


def _summary(result: Any) -> dict[str, Any]:
    return {
        "per_s": result.requests / result.seconds,
        "events_per_s": result.events / result.seconds,
        "p50_ms": percentile(result.latencies_ms, 50),
        "p99_ms": percentile(result.latencies_ms, 99),
        "errors": result.errors,
        "statuses": {str(k): v for k, v in result.statuses.items()},
    }


async def webhook_load(port: int, run: str, connections: int, seconds: float) -> dict[str, Any]:
    """Signed Shopify webhooks of the realistic mix, one per request, `connections` at a time."""
    hooks = Storefront(seed=11, run=run).shopify_webhooks(WEBHOOK_POOL)
    requests = []
    for hook in hooks:
        body, headers = hook.request()
        requests.append(encode_request("/webhooks/shopify", headers, body))
    result = await closed_loop(
        port, requests, [1] * len(requests), connections=connections, seconds=seconds, warmup_seconds=2
    )
    return _summary(result)


async def batch_load(port: int, run: str, connections: int, seconds: float) -> dict[str, Any]:
    """Segment /v1/batch calls of 100 events of the realistic mix."""
    calls = Storefront(seed=12, run=run).segment_calls(BATCH_CALLS * BATCH_POOL)
    bodies = [segment_batch_body(calls[i : i + BATCH_CALLS]) for i in range(0, len(calls), BATCH_CALLS)]
    requests = [encode_request("/v1/batch", {"Content-Type": "application/json"}, b) for b in bodies]
    # Events as Segment counts them: calls (an identify becomes two canonical events, one more record).
    events = [BATCH_CALLS] * len(requests)
    result = await closed_loop(
        port, requests, events, connections=connections, seconds=seconds, warmup_seconds=2
    )
    return _summary(result)


async def kafka_produce_limit(bootstrap: str, run: str, topic: str, count: int) -> dict[str, Any]:
    """As fast as one aiokafka producer with the ingest's settings (acks=all, idempotence, linger) goes:
    every record handed over at once, acknowledgements awaited together, as ingest does per request."""
    store = Storefront(seed=13, run=run)
    calls = store.segment_calls(count)
    records = [(e.partition_key.encode(), encode_event(e)) for e in canonical(calls)]
    producer = build_producer(KafkaSettings(kafka_bootstrap_servers=bootstrap), "bench-limit")
    await producer.start()
    try:
        # Warm the connection and metadata, outside the clock.
        await (await producer.send(topic, value=records[0][1], key=records[0][0]))
        started = time.perf_counter()
        window = 5_000  # acknowledgements outstanding at once, like many concurrent requests
        for start in range(0, len(records), window):
            acks = [await producer.send(topic, value=v, key=k) for k, v in records[start : start + window]]
            await asyncio.gather(*acks)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"events_per_s": len(records) / elapsed, "events": len(records), "seconds": elapsed}


def kafka_tool_run(bootstrap: str, run: str, topic: str, records: int, work_dir: Path) -> dict[str, Any]:
    """Kafka's ProducerPerformance with the canonical events of the same mix as payloads (bench/limits.py)."""
    calls = Storefront(seed=13, run=run).segment_calls(KAFKA_TOOL_PAYLOADS)
    values = [encode_event(e) for e in canonical(calls)]
    return kafka_tool_limit(bootstrap, topic, values, records, work_dir)


def kafka_limits(
    stack: BenchStack, r: int, aiokafka_records: int, tool_records: int, say: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run of each Kafka limit, one after the other on the same broker and topic."""
    from bench.isolated import run_isolated

    bootstrap = stack.kafka.bootstrap_servers
    limit = run_isolated(kafka_produce_limit, bootstrap, f"k{r}", LIMIT_TOPIC, aiokafka_records)
    say(f"aiokafka produce limit run {r + 1}: {limit['events_per_s']:.0f} events/s")
    tool = run_isolated(kafka_tool_run, bootstrap, f"t{r}", LIMIT_TOPIC, tool_records, stack.root)
    say(f"Kafka ProducerPerformance limit run {r + 1}: {tool['events_per_s']:.0f} records/s "
        f"({tool['mean_record_bytes']:.0f} B a record)")  # fmt: skip
    return limit, tool


def run_ingest(
    stack: BenchStack, runs: int, seconds: float, say: Any, tool_records: int = KAFKA_TOOL_RECORDS
) -> dict[str, Any]:
    from bench.isolated import run_isolated

    stack.recreate_topics([STOREFRONT_EVENTS, LIMIT_TOPIC])
    ingest: Service = stack.start_service("ingest", stack.env())
    out: dict[str, list[Any]] = {"webhooks": [], "batch": [], "limit": [], "limit_kafka_tool": []}
    try:
        for r in range(runs):
            out["webhooks"].append(run_isolated(webhook_load, ingest.port, f"w{r}", 64, seconds))
            say(f"ingest webhooks run {r + 1}: {out['webhooks'][-1]['per_s']:.0f} req/s")
            out["batch"].append(run_isolated(batch_load, ingest.port, f"b{r}", 8, seconds))
            say(f"ingest batch run {r + 1}: {out['batch'][-1]['events_per_s']:.0f} events/s")
            limit, tool = kafka_limits(stack, r, 100_000, tool_records, say)
            out["limit"].append(limit)
            out["limit_kafka_tool"].append(tool)
        out["peak_rss_mb"] = [ingest.peak_rss_mb()]
    finally:
        stack.stop_service(ingest)
    # The same with two ingest processes on the port (INGEST_WORKERS=2), beside the one-process headline:
    # on two cores they compete with Kafka and the load generator, so this shows what scaling out buys here.
    ingest = stack.start_service("ingest", stack.env(INGEST_WORKERS="2"))
    out["webhooks_2_workers"], out["batch_2_workers"] = [], []
    try:
        for r in range(runs):
            out["webhooks_2_workers"].append(run_isolated(webhook_load, ingest.port, f"w2{r}", 64, seconds))
            out["batch_2_workers"].append(run_isolated(batch_load, ingest.port, f"b2{r}", 8, seconds))
            say(
                f"ingest with 2 workers run {r + 1}: {out['webhooks_2_workers'][-1]['per_s']:.0f} req/s, "
                f"{out['batch_2_workers'][-1]['events_per_s']:.0f} batch events/s"
            )
    finally:
        stack.stop_service(ingest)
    return out

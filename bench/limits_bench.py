"""`--phases limits`: only the limits (and the one segmenter run the Postgres limits need the rows of), with
counts of your choosing: a short check of the measurements themselves, not a benchmark run."""

from __future__ import annotations

from typing import Any

from bench.ingest_bench import LIMIT_TOPIC, kafka_limits
from bench.segmenter_bench import prefilled, segmenter_with_limits
from bench.stack import BenchStack


def run_limits(
    stack: BenchStack, runs: int, kafka_records: int, segmenter_events: int, say: Any
) -> dict[str, Any]:
    """Laid out like the ingest and segmenter phases' own results, so the report reads them alike."""
    stack.recreate_topics([LIMIT_TOPIC])
    ingest: dict[str, list[Any]] = {"limit": [], "limit_kafka_tool": []}
    for r in range(runs):
        limit, tool = kafka_limits(stack, r, kafka_records, kafka_records, say)
        ingest["limit"].append(limit)
        ingest["limit_kafka_tool"].append(tool)
    prefill = prefilled(stack, segmenter_events, say)
    segmenter: dict[str, list[Any]] = {"segmenter": [], "limit": [], "peak_rss_mb": []}
    for r in range(runs):
        result, limit, peak = segmenter_with_limits(stack, r, prefill, say)
        segmenter["segmenter"].append(result)
        segmenter["limit"].append(limit)
        segmenter["peak_rss_mb"].append(peak)
    return {"ingest": ingest, "segmenter": segmenter}

"""The limits without Python (bench/limits.py): reading the tools' reports, captured from real runs on
this machine (bench_outputs/: ProducerPerformance 3.9.2's stdout, pgbench 15's stdout with `-r`), and
the pgbench script built from the segmenter's own statements."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.limits import (
    SEGMENTER_WRITES,
    ToolOutputError,
    parse_pgbench,
    parse_producer_performance,
    pgbench_figures,
    pgbench_script,
    pgbench_statement,
    producer_limit,
    write_payload_file,
)
from bench.report import figures

OUTPUTS = Path(__file__).parent / "bench_outputs"


def test_producer_performance_summary_and_steady_rate() -> None:
    found = parse_producer_performance((OUTPUTS / "producer_performance.txt").read_text())
    # The summary line: "60000 records sent, 4156.275977 records/sec (2.09 MB/sec), 1355.04 ms avg
    # latency, 6099.00 ms max latency, 1293 ms 50th, 2625 ms 95th, 3304 ms 99th, 3613 ms 99.9th."
    assert found["records"] == 60000
    assert found["per_s"] == pytest.approx(4156.275977)
    assert found["p50_ms"] == 1293
    assert found["p99_ms"] == 3304
    assert found["p999_ms"] == 3613
    # The first window (one record in ~6 s, while the producer fetched metadata) is left out of the
    # steady rate: only the second window's 32002 records at 6174.4/s remain.
    assert found["windows"] == 2
    assert found["steady_per_s"] == pytest.approx(6174.4)


def test_the_limit_is_the_higher_of_the_whole_run_and_the_steady_rate() -> None:
    slow_start = parse_producer_performance((OUTPUTS / "producer_performance.txt").read_text())
    assert producer_limit(slow_start) == pytest.approx(6174.4)  # not the whole run's 4156
    # A run whose last, partial window was its fastest: 150,000 records at 10,676.9/s in all, 10,501.4/s
    # in its one full window after the first.
    fast_end = parse_producer_performance((OUTPUTS / "producer_performance_150k.txt").read_text())
    assert fast_end["steady_per_s"] == pytest.approx(10501.4)
    assert producer_limit(fast_end) == pytest.approx(10676.916507)


def test_a_run_too_short_for_a_second_window_has_no_steady_rate() -> None:
    output = (
        "1 records sent, 0.2 records/sec (0.00 MB/sec), 6099.0 ms avg latency, 6099.0 ms max latency.\n"
        "5000 records sent, 800.1 records/sec (0.40 MB/sec), 100.0 ms avg latency, 6099.0 ms max latency,"
        " 80 ms 50th, 200 ms 95th, 300 ms 99th, 400 ms 99.9th.\n"
    )
    found = parse_producer_performance(output)
    assert found["per_s"] == pytest.approx(800.1)
    assert math.isnan(found["steady_per_s"])
    assert producer_limit(found) == pytest.approx(800.1)


def test_producer_performance_without_a_summary_is_an_error() -> None:
    with pytest.raises(ToolOutputError):
        parse_producer_performance("Reading payloads from: x\nNumber of messages read: 3\n")


def test_pgbench_report_with_statement_latencies() -> None:
    result = parse_pgbench((OUTPUTS / "pgbench.txt").read_text())
    assert result.tps == pytest.approx(1.493622)
    assert result.transactions == 2
    assert result.failed == 0
    assert result.latency_ms == pytest.approx(669.514)
    # The staging read, BEGIN, the eight statements, COMMIT: in the script's order.
    assert len(result.statements) == 11
    assert result.statements[0][0] == pytest.approx(166.741)
    assert result.statements[0][1].startswith("SELECT processed_events__store_id")
    assert result.statements[1][0] == pytest.approx(0.087)
    assert result.statements[1][1] == "BEGIN;"
    assert result.statements[-1][0] == pytest.approx(11.853)
    assert result.statements[-1][1] == "COMMIT;"
    assert result.statements[3][1].startswith("INSERT INTO bench_pgbench.profiles")


def test_pgbench_limit_leaves_the_staging_read_out() -> None:
    result = parse_pgbench((OUTPUTS / "pgbench.txt").read_text())
    limit = pgbench_figures(result, events=6000, rows=17000, batches=2)
    # BEGIN, the eight statements and COMMIT of the captured report; the read (166.741 ms) is not in it.
    write_ms = 0.087 + 81.754 + 169.893 + 70.602 + 16.172 + 8.390 + 20.590 + 16.387 + 106.781 + 11.853
    assert limit["batch_write_ms"] == pytest.approx(write_ms)
    assert limit["events_per_s"] == pytest.approx(6000 / (2 * write_ms / 1000), rel=1e-4)
    assert limit["events_per_s_with_read"] == pytest.approx(6000 * 1.493622 / 2)
    with pytest.raises(ToolOutputError):  # a run that did not do every batch is no limit
        pgbench_figures(result, events=6000, rows=17000, batches=3)


def test_pgbench_without_a_tps_line_is_an_error() -> None:
    with pytest.raises(ToolOutputError):
        parse_pgbench("pgbench: error: connection to server failed\n")


def test_the_script_runs_the_segmenters_statements_with_their_parameters_renamed() -> None:
    statement = pgbench_statement("profiles")
    assert statement.startswith("INSERT INTO bench_pgbench.profiles (store_id, customer_id,")
    assert "CAST(:profiles__facts AS bytea)" in statement  # the documents, one blob
    assert "CAST(CAST(:profiles__facts__len AS text) AS integer[])" in statement  # and their places
    assert "CAST(CAST(:profiles__email AS text) AS text[])" in statement  # the others, literals
    assert "facts::jsonb" in statement  # a cast, not a pgbench variable
    assert "ON CONFLICT (store_id, customer_id) DO UPDATE" in statement
    assert "segmenter." not in statement
    copurchases = pgbench_statement("copurchases")
    assert "bench_pgbench.copurchases.orders + excluded.orders" in copurchases
    script = pgbench_script(list(SEGMENTER_WRITES)).splitlines()
    assert script[0].endswith("\\gset")
    # Every parameter of every statement read from the batch: a blob's places too.
    assert ", outbox__value, outbox__value__at, outbox__value__len " in script[0]
    assert "nextval('bench_pgbench.next_batch')" in script[0]
    assert script[1] == "BEGIN;"
    assert script[-1] == "COMMIT;"
    assert len(script) == len(SEGMENTER_WRITES) + 3


def test_payload_file_holds_one_record_a_line(tmp_path: Path) -> None:
    path = tmp_path / "payloads"
    found = write_payload_file([b'{"a":1}', b'{"b":"\\u00e9"}', b"broken\nin two"], path)
    assert path.read_bytes().splitlines() == [b'{"a":1}', b'{"b":"\\u00e9"}']
    assert found == {"payloads": 2, "mean_record_bytes": (7 + 14) / 2}


def test_report_gives_each_figure_as_a_ratio_to_its_limit() -> None:
    raw = {
        "ingest": {
            "webhooks": [{"per_s": 2000.0, "p50_ms": 1, "p99_ms": 2}],
            "batch": [{"events_per_s": 10000.0, "p50_ms": 1, "p99_ms": 2}],
            "limit": [{"events_per_s": 30000.0}],
            "limit_kafka_tool": [{"events_per_s": 80000.0, "p99_ms": 40.0}],
        },
        "segmenter": {
            "segmenter": [{"events_per_s": 5000.0}],
            "limit": [
                {
                    "events_per_s": 20000.0,
                    "rows_per_s": 60000.0,
                    "pgbench": {"events_per_s": 15000.0, "rows_per_s": 45000.0},
                }
            ],
        },
    }
    found = figures(raw)
    assert found["ingest_batch_kafka_tool_ratio"].median == pytest.approx(8.0)
    assert found["ingest_webhook_kafka_tool_ratio"].median == pytest.approx(40.0)
    assert found["segmenter_pgbench_ratio"].median == pytest.approx(3.0)
    assert found["segmenter_limit_ratio"].median == pytest.approx(4.0)  # the asyncpg limit, kept
    assert found["limit_kafka_produce_per_s"].median == 30000.0


def test_report_reads_the_limits_phase_alike() -> None:
    raw = {
        "limits": {
            "ingest": {"limit": [{"events_per_s": 9000.0}], "limit_kafka_tool": [{"events_per_s": 3000.0,
                                                                                 "p99_ms": 5.0}]},
            "segmenter": {"segmenter": [{"events_per_s": 1500.0}],
                          "limit": [{"events_per_s": 4500.0, "rows_per_s": 1.0,
                                     "pgbench": {"events_per_s": 6000.0, "rows_per_s": 2.0}}]},
        }
    }  # fmt: skip
    found = figures(raw)
    assert found["limit_kafka_tool_per_s"].median == 3000.0
    assert found["segmenter_pgbench_ratio"].median == pytest.approx(4.0)

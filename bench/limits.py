"""The limits without Python: Kafka's own producer performance tool and PostgreSQL's pgbench, each run
against the benchmark's own broker and server, with the same records and the same statements as ours.

- Kafka: `org.apache.kafka.tools.ProducerPerformance` (the kafka-tools jar, deploy/kafka/pom.xml) sends
  the canonical events of the benchmark's mix (as its payload file: the very bytes, so the same record
  sizes) with the ingest's producer settings: acks=all, idempotence on, the same linger and batch size.
- PostgreSQL: pgbench runs the segmenter's own upsert statements (services/segmenter/adapters/repository.py,
  the text SQLAlchemy sends), prepared (`-M prepared`), one transaction per batch of the segmenter's batch
  size, on the rows a segmenter run wrote (see segmenter_bench.limit_plan).

The parsers of the tools' outputs are pure functions, unit-tested on captured output.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploy.devstack.kafka import DEFAULT_LIBS_DIR, LOG4J_PROPERTIES
from deploy.devstack.postgres import ensure_postgres_binaries
from services.segmenter.adapters import repository
from services.segmenter.adapters import tables as segmenter_tables
from services.segmenter.adapters.unnest import parameters
from shared.kafka import MAX_BATCH_BYTES

PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
# The tool's JVM: the broker's heap settings are plenty for a client.
_JVM = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")


class ToolOutputError(ValueError):
    """A tool's output did not hold the figure we read from it."""


# -- Kafka: ProducerPerformance ---------------------------------------------------------------------------

# The last line ProducerPerformance prints (kafka 3.9, ProducerPerformance.Stats.printTotal):
# "100000 records sent, 52770.448549 records/sec (49.71 MB/sec), 346.57 ms avg latency, 640.00 ms max
# latency, 351 ms 50th, 596 ms 95th, 626 ms 99th, 639 ms 99.9th."
_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<per_s>[\d.]+) records/sec \((?P<mb_per_s>[\d.]+) MB/sec\), "
    r"(?P<avg_ms>[\d.]+) ms avg latency, (?P<max_ms>[\d.]+) ms max latency, (?P<p50_ms>\d+) ms 50th, "
    r"(?P<p95_ms>\d+) ms 95th, (?P<p99_ms>\d+) ms 99th, (?P<p999_ms>\d+) ms 99\.9th\."
)


# Its interim lines, one per 5 s window: "32002 records sent, 6174.4 records/sec (3.10 MB/sec), 984.0 ms
# avg latency, 3527.0 ms max latency." (records acknowledged in the window, and their rate).
_PRODUCER_WINDOW = re.compile(
    r"^(?P<records>\d+) records sent, (?P<per_s>[\d.]+) records/sec \([\d.]+ MB/sec\), "
    r"[\d.]+ ms avg latency, [\d.]+ ms max latency\.$",
    re.MULTILINE,
)


def parse_producer_performance(output: str) -> dict[str, float]:
    """The final summary of ProducerPerformance, and `steady_per_s`: the rate over its full 5 s windows
    after the first (NaN with fewer than two).

    The tool's clock starts at its first send, before the producer has its metadata and producer id: on
    this machine that first window can take seconds for one record, which the summary counts. The steady
    rate leaves it (and the last, partial window) out, as the aiokafka limit sends one record to warm up
    before its clock starts."""
    found = list(_PRODUCER_SUMMARY.finditer(output))
    if not found:
        raise ToolOutputError(f"no ProducerPerformance summary line in: {output[-500:]!r}")
    summary = {key: float(value) for key, value in found[-1].groupdict().items()}
    windows = [(int(m["records"]), float(m["per_s"])) for m in _PRODUCER_WINDOW.finditer(output)]
    later = [(n, rate) for n, rate in windows[1:] if rate > 0]
    seconds = sum(n / rate for n, rate in later)
    summary["steady_per_s"] = sum(n for n, _ in later) / seconds if len(later) >= 1 and seconds else math.nan
    summary["windows"] = len(windows)
    return summary


def producer_limit(summary: dict[str, float]) -> float:
    """What Kafka can do: the higher of the whole run's rate (held back by the producer's start-up) and
    the full windows' after the first (which leave out the last, partial window, often the fastest)."""
    steady = summary["steady_per_s"]
    return summary["per_s"] if math.isnan(steady) else max(summary["per_s"], steady)


def write_payload_file(values: Sequence[bytes], path: Path) -> dict[str, float]:
    """The records as ProducerPerformance's payload file: one per line (UTF-8). The tool picks one at
    random for each record it sends, so the sizes are the mix's. Canonical events are compact JSON, which
    escapes newlines; a value holding one anyway is left out rather than split in two."""
    kept = [v for v in values if b"\n" not in v]
    if not kept:
        raise ValueError("no payloads to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(kept) + b"\n")
    return {"payloads": len(kept), "mean_record_bytes": sum(len(v) for v in kept) / len(kept)}


def producer_performance_argv(
    bootstrap: str, topic: str, records: int, payload_file: Path, libs_dir: Path = DEFAULT_LIBS_DIR
) -> list[str]:
    """The tool with the ingest's producer settings (shared/kafka.build_producer): acks=all, idempotence,
    linger 5 ms, the same batch size, no compression; unthrottled."""
    props = {
        "bootstrap.servers": bootstrap,
        "client.id": "bench-producer-performance",
        "acks": "all",
        "enable.idempotence": "true",
        "linger.ms": "5",
        "batch.size": str(MAX_BATCH_BYTES),
        "compression.type": "none",
    }
    return [
        "java",
        *_JVM,
        f"-Dlog4j.configuration=file:{LOG4J_PROPERTIES}",
        "-cp",
        f"{libs_dir.resolve()}/*",
        PRODUCER_PERFORMANCE,
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--throughput",
        "-1",
        "--payload-file",
        str(payload_file),
        "--producer-props",
        *(f"{k}={v}" for k, v in props.items()),
    ]


def kafka_tool_limit(
    bootstrap: str, topic: str, values: Sequence[bytes], records: int, work_dir: Path
) -> dict[str, Any]:
    """Run ProducerPerformance once; its figures, the payloads' mean size and the tool's own output."""
    payloads = write_payload_file(values, work_dir / "producer-performance.payloads")
    argv = producer_performance_argv(bootstrap, topic, records, work_dir / "producer-performance.payloads")
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "CLASSPATH")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)  # noqa: S603
    output = done.stdout + done.stderr
    # Kept for reading after the run (and as the unit tests' captured output).
    (work_dir / "producer-performance.out").write_text(output)
    if done.returncode != 0:
        raise ToolOutputError(f"ProducerPerformance exited with {done.returncode}: {output[-2000:]}")
    summary = parse_producer_performance(done.stdout)
    return {
        "events_per_s": producer_limit(summary),
        "events_per_s_whole_run": summary["per_s"],
        "events": int(summary["records"]),
        **{k: v for k, v in summary.items() if k not in ("per_s", "records")},
        **payloads,
        "output_tail": done.stdout.strip().splitlines()[-3:],
    }


# -- PostgreSQL: pgbench ----------------------------------------------------------------------------------

# pgbench 15's summary of a run: "tps = 12.781563 (without initial connection time)".
_TPS = re.compile(r"^tps = (?P<tps>[\d.]+) \(without initial connection time\)$", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (?P<done>\d+)(?:/(?P<of>\d+))?$", re.M)
_FAILED = re.compile(r"^number of failed transactions: (?P<failed>\d+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = (?P<ms>[\d.]+) ms$", re.MULTILINE)
# `-r`: "statement latencies in milliseconds and failures:" (15; "...in milliseconds:" before), then one
# line per command of the script, in its order: latency, [failures,] the command's first line.
_STATEMENTS_HEADER = re.compile(r"^\s*statement latencies in milliseconds.*:$", re.MULTILINE)
_STATEMENT = re.compile(r"^\s+(?P<ms>[\d.]+)\s+(?:(?P<failures>\d+)\s+)?(?P<command>\S.*)$")


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    latency_ms: float
    # (milliseconds per execution, the command's first line) for each command of the script, in order.
    statements: tuple[tuple[float, str], ...]


def parse_pgbench(output: str) -> PgbenchResult:
    """pgbench's report of one run (`-r` for the statements' latencies)."""
    tps = _TPS.search(output)
    processed = _PROCESSED.search(output)
    if tps is None or processed is None:
        raise ToolOutputError(f"no tps line in pgbench's output: {output[-500:]!r}")
    failed = _FAILED.search(output)
    latency = _LATENCY.search(output)
    statements: list[tuple[float, str]] = []
    header = _STATEMENTS_HEADER.search(output)
    if header is not None:
        for line in output[header.end() :].splitlines()[1:]:
            match = _STATEMENT.match(line)
            if match is None:
                break
            statements.append((float(match["ms"]), match["command"]))
    return PgbenchResult(
        tps=float(tps["tps"]),
        transactions=int(processed["done"]),
        failed=int(failed["failed"]) if failed else 0,
        latency_ms=float(latency["ms"]) if latency else float("nan"),
        statements=tuple(statements),
    )


# The segmenter's write statements and their columns, in the order Changes.write runs them (its deletes,
# merges and reads are left out: the limit is the writes alone).
SEGMENTER_WRITES: dict[str, tuple[str, tuple[str, ...]]] = {
    "processed_events": (repository._CLAIM.text, repository._CLAIMED),
    "profiles": (repository._SAVE_PROFILES.text, repository._PROFILE),
    "identities": (repository._SAVE_IDENTITIES.text, repository._IDENTITY),
    "orders": (repository._SAVE_ORDERS.text, repository._ORDER),
    "copurchases": (repository._ADD_COPURCHASES.text, repository._COPURCHASE),
    "timers": (repository._SET_TIMERS.text, repository._TIMER),
    "transitions": (repository._ADD_TRANSITIONS.text, repository._TRANSITION),
    "outbox": (repository._ADD_TO_OUTBOX.text, repository._OUTBOX),
}
PGBENCH_SCHEMA = "bench_pgbench"
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


def statement_parameters(table: str) -> tuple[str, ...]:
    """The parameters of the segmenter's statement for `table`: a column's, or a blob's and its places."""
    return parameters(getattr(segmenter_tables, table), SEGMENTER_WRITES[table][1])


def pgbench_statement(table: str, schema: str = PGBENCH_SCHEMA) -> str:
    """The segmenter's statement for `table`, aimed at the copy of its table in `schema`, its parameters
    renamed `<table>__<column>` (pgbench's variables are one namespace for the whole script, and every
    statement has a `store_id`). pgbench turns each `:variable` into a parameter of the prepared statement."""
    sql, _ = SEGMENTER_WRITES[table]
    renamed = _PARAMETER.sub(lambda m: f":{table}__{m[1]}", sql)
    renamed = renamed.replace("segmenter.", f"{schema}.")
    used = set(_PARAMETER.findall(renamed))
    expected = {f"{table}__{p}" for p in statement_parameters(table)}
    if used != expected:
        raise ValueError(f"{table}: the statement's parameters {sorted(used)} are not {sorted(expected)}")
    return " ".join(renamed.split())


def pgbench_script(tables: Sequence[str], schema: str = PGBENCH_SCHEMA) -> str:
    """One transaction per batch: the batch's arrays read into variables (the first command; it is no
    part of the limit, see pgbench_figures), then the segmenter's statements in one transaction."""
    variables = [f"{t}__{p}" for t in tables for p in statement_parameters(t)]
    lines = [
        f"SELECT {', '.join(variables)} FROM {schema}.batches "  # noqa: S608 - our own names
        f"WHERE batch = (SELECT nextval('{schema}.next_batch')) \\gset",
        "BEGIN;",
        *(pgbench_statement(t, schema) + ";" for t in tables),
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"


def pgbench_figures(result: PgbenchResult, events: int, rows: int, batches: int) -> dict[str, Any]:
    """The limit is the transaction without its first command (reading the batch's arrays out of the
    staging table, which the segmenter never does): the sum of the other commands' mean latencies.
    `tps` (with the read) is kept beside it."""
    if result.transactions != batches or result.failed:
        raise ToolOutputError(
            f"pgbench ran {result.transactions} of {batches} transactions, {result.failed} failed"
        )
    if len(result.statements) < 3:
        raise ToolOutputError("pgbench reported no statement latencies (-r)")
    write_ms = sum(ms for ms, _ in result.statements[1:])
    seconds = write_ms * batches / 1000
    return {
        "events_per_s": events / seconds,
        "rows_per_s": rows / seconds,
        "batch_write_ms": write_ms,
        "batch_read_ms": result.statements[0][0],
        "tps": result.tps,
        "events_per_s_with_read": events * result.tps / batches,
        "latency_avg_ms": result.latency_ms,
        "transactions": result.transactions,
        "statement_ms": [ms for ms, _ in result.statements],
    }


def run_pgbench(database_url: str, script: str, transactions: int, work_dir: Path) -> PgbenchResult:
    """pgbench with one client (the segmenter is one connection writing), prepared statements, -r."""
    url = urlsplit(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    script_path = work_dir / "segmenter-writes.pgbench.sql"
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(script)
    pgbench = ensure_postgres_binaries() / "pgbench"
    argv = [str(pgbench), "-n", "-M", "prepared", "-c", "1", "-j", "1", "-t", str(transactions), "-r"]
    argv += ["-f", str(script_path), "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432)]
    argv += ["-U", url.username or "postgres", url.path.lstrip("/")]
    env = {**os.environ, "PGPASSWORD": url.password or "", "PGCONNECT_TIMEOUT": "10"}
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800, check=False)  # noqa: S603
    (work_dir / "pgbench.out").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise ToolOutputError(
            f"pgbench exited with {done.returncode} after {time.monotonic() - started:.0f} s: "
            f"{(done.stdout + done.stderr)[-2000:]}"
        )
    return parse_pgbench(done.stdout)

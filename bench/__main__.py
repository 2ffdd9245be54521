"""`python -m bench`: start an isolated stack, run the phases, print the table, write JSON and PNG."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from bench.e2e_bench import run_e2e
from bench.ingest_bench import KAFKA_TOOL_RECORDS, run_ingest
from bench.limits_bench import run_limits
from bench.replay_check import BATCH as REPLAY_BATCH
from bench.replay_check import REPO_ROOT, differences, replay_check
from bench.replay_check import load as load_replay
from bench.report import RESULTS_DIR, figures, markdown_table, print_table, write_chart, write_json
from bench.segmenter_bench import run_segmenter
from bench.settle import settle
from bench.stack import BenchStack
from shared.compiled import compiled_now

app = typer.Typer(add_completion=False, help="Loyalty Funnel benchmark (issue 6). Never part of make test.")
# Wide when piped to a file too: a wrapped table is hard to read in a log.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)
PHASES = ("ingest", "segmenter", "e2e")
# Not run by default: the limits alone (their runs are inside the ingest and segmenter phases already).
EXTRA_PHASES = ("limits",)
# The broker's durability settings (deploy/kafka/server.properties, one broker) and the producers' (both
# the ingest's aiokafka producer and Kafka's own tool): reported beside the figures.
KAFKA_SETTINGS = {
    "brokers": 1,
    "replication.factor": 1,
    "min.insync.replicas": 1,
    "acks": "all",
    "enable.idempotence": True,
    "log.flush.interval.messages": "Kafka's default (the OS page cache decides; durability is replication)",
}


def _say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", markup=True)


@app.command()
def run(
    runs: Annotated[int, typer.Option(help="runs of each figure (median and spread)")] = 3,
    phases: Annotated[
        str, typer.Option(help="comma-separated: ingest,segmenter,e2e; or limits (the limits alone)")
    ] = ",".join(PHASES),
    ingest_seconds: Annotated[float, typer.Option(help="measuring window of each ingest run")] = 10.0,
    segmenter_events: Annotated[int, typer.Option(help="events pre-filled for the segmenter")] = 200_000,
    kafka_limit_records: Annotated[
        int, typer.Option(help="records Kafka's ProducerPerformance sends (--phases limits: aiokafka too)")
    ] = KAFKA_TOOL_RECORDS,
    e2e_rate: Annotated[float, typer.Option(help="offered events/s end to end")] = 1000.0,
    e2e_seconds: Annotated[float, typer.Option(help="length of each end-to-end run")] = 60.0,
    output: Annotated[Path, typer.Option(help="results JSON (the PNG goes beside it)")] = RESULTS_DIR
    / "latest.json",
    before: Annotated[Path | None, typer.Option(help="earlier results JSON to compare with")] = RESULTS_DIR
    / "before.json",
) -> None:
    """Run the benchmark on a stack of its own (.run/bench/) and stop everything it started."""
    chosen = [p.strip() for p in phases.split(",") if p.strip()]
    unknown = set(chosen) - set(PHASES) - set(EXTRA_PHASES)
    if unknown:
        raise typer.BadParameter(f"unknown phases: {', '.join(sorted(unknown))}")
    began = time.monotonic()
    compiled_at_start = compiled_or_warn()
    _say("starting the benchmark's own Kafka, PostgreSQL and SMTP sink")
    stack = BenchStack.start()
    try:
        durability = stack.postgres_durability()
    except BaseException:
        stack.stop()
        raise
    raw: dict[str, Any] = {}
    phase_runners: dict[str, Callable[[], dict[str, Any]]] = {
        "ingest": lambda: run_ingest(stack, runs, ingest_seconds, _say, kafka_limit_records),
        "segmenter": lambda: run_segmenter(stack, runs, segmenter_events, _say),
        "e2e": lambda: run_e2e(stack, runs, e2e_rate, e2e_seconds, _say),
        "limits": lambda: run_limits(stack, runs, kafka_limit_records, segmenter_events, _say),
    }
    settled: dict[str, dict[str, Any]] = {}
    try:
        for phase in chosen:
            settled[phase] = settle()  # not the phase before's writes going to disk meanwhile
            _say(f"{phase}: {settled[phase]['unwritten_kib_before'] // 1024} MiB flushed to disk first")
            try:
                raw[phase] = phase_runners[phase]()
            except Exception as exc:  # one phase failing must not lose the figures of the others
                console.print_exception()
                raw[phase] = {"error": f"{type(exc).__name__}: {exc}"}
            # Written after each phase, so a long run interrupted later still leaves its figures.
            write_json(figures(raw), raw, {"partial": True}, output.with_suffix(".partial.json"))
    finally:
        stack.stop()
    found = figures(raw)
    previous = json.loads(before.read_text()) if before and before.is_file() and before != output else None
    print_table(found, previous, console)
    meta = {
        "runs": runs,
        "phases": chosen,
        "ingest_seconds": ingest_seconds,
        "segmenter_events": segmenter_events,
        "kafka_limit_records": kafka_limit_records,
        "e2e_rate": e2e_rate,
        "e2e_seconds": e2e_seconds,
        "postgres_settings": durability,
        "kafka_settings": KAFKA_SETTINGS,
        # Which CPython build ran (its prefix: /usr for Debian's, optimised; see the Makefile's PYTHON).
        "machine": {
            "cpus": _cpus(),
            "python": platform.python_version(),
            "python_prefix": sys.base_prefix,
            "load_at_end": _loadavg(),
        },
        # Each service process decides when it starts: a source edited during the run shows at the end.
        "compiled": {"at_start": compiled_at_start, "at_end": compiled_or_warn()},
        "settled": settled,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - began, 1),
    }
    write_json(found, raw, meta, output)
    output.with_suffix(".partial.json").unlink(missing_ok=True)  # the whole run is in `output` now
    write_chart(found, output.with_suffix(".png"), previous)
    _say(f"wrote {output} and {output.with_suffix('.png')} in {meta['wall_seconds']:.0f} s")


def compiled_or_warn() -> dict[str, bool]:
    """Whether the services started now run their compiled modules (shared/compiled.py), said aloud when one
    would not: `python -m bench` run directly, after an edit of the segmenter, of ingest or of shared/ that
    no `make install` (or `make compiled`) has built since, measures them interpreted: about 12 % more of
    the segmenter's CPU an event, half as much again of ingest's mapping a Segment call. `make bench` builds
    them first."""
    found = compiled_now()
    for package, compiled in found.items():
        if not compiled:
            _say(
                f"[yellow]warning:[/] {package} runs interpreted: its build is not of these sources "
                "(`make compiled` builds it); the figures are not those of the service as installed"
            )
    return found


def _cpus() -> int:
    return os.cpu_count() or 0


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@app.command("replay-check")
def replay_check_command(
    events: Annotated[int, typer.Option(help="events of the mix to replay")] = 200_000,
    batch: Annotated[
        int, typer.Option(help="events per batch (the segmenter's default batch)")
    ] = REPLAY_BATCH,
    output: Annotated[
        Path | None,
        typer.Option(help="where the digest JSON goes (default: .run/bench-replay/<commit>.json)"),
    ] = None,
    dump: Annotated[
        Path | None, typer.Option(help="also write each table's dump (TSV) into this directory")
    ] = None,
    compare: Annotated[
        Path | None, typer.Option(help="another replay-check JSON: exit 1 unless this run matches it")
    ] = None,
    save_input: Annotated[
        Path | None, typer.Option(help="also save the replayed events to this file")
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="replay events saved by --save-input (not the mix)")
    ] = None,
) -> None:
    """Replay the benchmark's mix into an empty database through the segmenter's batch handler and write
    a digest of its tables and outbox, to compare two commits byte for byte (bench/README.md)."""
    root = REPO_ROOT / ".run" / "bench-replay"
    _say(f"replaying {events} events of the mix in batches of {batch} (PostgreSQL of its own in {root})")
    result = replay_check(events, batch, root, dump, input_file, save_input)
    target = output or root / f"{result['commit'].replace('+', '-')}-{events}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    for name, table_digest in result["tables"].items():
        console.print(f"  {name:<18} {table_digest['rows']:>9,} rows  {table_digest['sha256'][:16]}")
    rules = "" if result["rules_compiled"] else ", the rules interpreted"
    took = f"{result['wall_seconds']:.0f} s{rules}"
    _say(f"digest {result['digest']} of {result['commit']} ({took}) in {target}")
    if compare is not None:
        found = differences(result, load_replay(compare))
        if found:
            for line in found:
                console.print(f"[red]differs[/] {line}")
            raise typer.Exit(1)
        console.print(f"[green]same state[/] as {compare}")


@app.command()
def table(
    latest: Annotated[Path, typer.Option(help="results JSON")] = RESULTS_DIR / "latest.json",
    before: Annotated[Path, typer.Option(help="earlier results JSON")] = RESULTS_DIR / "before.json",
) -> None:
    """Print two results files side by side as a Markdown table (for bench/README.md)."""
    earlier = json.loads(before.read_text()) if before.is_file() else None
    typer.echo(markdown_table(json.loads(latest.read_text()), earlier))


if __name__ == "__main__":
    app()

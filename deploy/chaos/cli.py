"""`python -m deploy.chaos run|down`: the chaos run behind `make chaos` (not part of `make test`)."""

from __future__ import annotations

import logging
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deploy.chaos.run import CHAOS_DIR, ChaosOptions, ChaosRun
from deploy.chaos.verdict import Findings
from deploy.devstack.process import StackError
from deploy.devstack.stack import Stack, StackLayout

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
# Piped to a file or a CI log, rich would wrap at 80 columns.
console = Console(highlight=False, width=None if Console().is_terminal else 120)


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[red]WRONG[/]"


def report(findings: Findings) -> Table:
    table = Table(title="Chaos run", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("", justify="center")
    dead = sum(findings.dead_letters.values())
    duplicates = sum(findings.duplicate_messages.values())
    rows = [
        ("requests acknowledged (2xx)", f"{findings.acknowledged_requests:,}", True),
        ("events acknowledged", f"{findings.acknowledged_events:,}", findings.acknowledged_events > 0),
        ("lost (acknowledged, never processed)", f"{len(findings.lost):,}", not findings.lost),
        ("duplicate transitions", f"{findings.duplicate_transitions:,}", not findings.duplicate_transitions),
        ("emails received (distinct Message-IDs)", f"{findings.emails:,}", True),
        ("duplicate messages", f"{duplicates:,}", not duplicates),
        ("messages of unknown fate (claimed when a crash came)", f"{findings.unknown_fate:,}", True),
        ("dead letters (all *.dlq topics)", f"{dead:,}", not dead),
        ("requests refused (4xx)", f"{findings.refused:,}", not findings.refused),
        ("pipeline caught up", "yes" if findings.settled else "no", findings.settled),
    ]
    for name, value, ok in rows:
        table.add_row(name, value, _mark(ok))
    table.add_section()
    for fault in findings.faults:
        took = f"{fault.ready_after:.1f} s" if fault.ready_after is not None else "never"
        ok = fault.ready_after is not None and fault.ready_after <= findings.ready_limit
        table.add_row(
            f"ready again after SIGKILL {fault.component} at {fault.at:.0f} s ({fault.restarts} restart)",
            took,
            _mark(ok),
        )
    return table


@app.command()
def run(
    duration: Annotated[
        float, typer.Option(min=30, max=1800, help="Seconds of load; the faults are spread over them.")
    ] = 180.0,
    rate: Annotated[float, typer.Option(min=1, max=1000, help="Requests per second to ingest.")] = 40.0,
    brokers: Annotated[
        int, typer.Option(help="1, or 3 for a KRaft cluster (replication 3, min.insync.replicas 2).")
    ] = 1,
    seed: Annotated[int | None, typer.Option(min=0, max=999_999, help="The simulated store's seed.")] = None,
    ready_limit: Annotated[
        float, typer.Option(help="Most seconds the stack may take to be ready again after a kill.")
    ] = 120.0,
    settle_timeout: Annotated[
        float, typer.Option(help="Most seconds to wait for the pipeline to catch up after the load.")
    ] = 240.0,
    keep: Annotated[bool, typer.Option(help="Leave the chaos stack running at the end.")] = False,
) -> None:
    """Start a stack of its own, send a simulated store at a steady rate while SIGKILLing each service,
    a broker and Postgres in turn, then check nothing acknowledged was lost or duplicated."""
    if brokers not in (1, 3):
        raise typer.BadParameter("1 or 3", param_hint="--brokers")
    options = ChaosOptions(
        duration=duration,
        rate=rate,
        brokers=brokers,
        seed=seed if seed is not None else int(time.time()) % 1_000_000,
        ready_limit=ready_limit,
        settle_timeout=settle_timeout,
        keep=keep,
    )
    # While a broker is down or a cluster forms, aiokafka warns about every metadata answer it dislikes;
    # the run reports what matters itself.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    began = time.monotonic()
    try:
        findings = ChaosRun(options, console).run()
    except StackError as exc:
        console.print("[red]✗ the chaos stack failed:[/]")
        console.print(str(exc), markup=False)
        raise typer.Exit(2) from exc
    console.print(report(findings))
    for note in findings.notes:
        console.print(f"[yellow]•[/] {note}", markup=False)
    if findings.lost:
        console.print(f"[red]lost, e.g.:[/] {', '.join(findings.lost[:5])}", markup=False)
    for (recipient, flow), extra in list(findings.duplicate_messages.items())[:5]:
        console.print(f"[red]duplicate:[/] {extra} extra {flow} message(s) to {recipient}", markup=False)
    problems = findings.problems()
    took = time.monotonic() - began
    if problems:
        console.print(f"[red bold]FAILED[/] after {took:.0f} s: " + "; ".join(problems))
        raise typer.Exit(1)
    console.print(f"[green bold]PASSED[/] in {took:.0f} s: nothing acknowledged lost or duplicated.")


@app.command()
def down() -> None:
    """Stop a chaos stack left running (--keep, or a run killed outright)."""
    Stack(StackLayout.load(CHAOS_DIR), console).down()

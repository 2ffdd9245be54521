"""`python -m deploy.devstack up|down|status`: the local stack behind `make up` / `make down`.

Everything lives under .run/stack/ (pidfiles, layout, logs/; PostgreSQL's data too unless its account
cannot reach the checkout, see deploy/devstack/postgres.py). Kafka, Postgres and the SMTP sink are started
only when KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, or SMTP_HOST+SMTP_PORT do not point elsewhere. A
supervisor restarts whatever dies until `down`.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deploy.devstack.kafka import DEFAULT_LIBS_DIR, ensure_kafka_jars
from deploy.devstack.postgres import ensure_postgres_binaries
from deploy.devstack.process import StackError
from deploy.devstack.stack import HOST, SERVICE_NAMES, Stack, default_layout

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The local stack behind make up / make down / make status; state in .run/stack/.",
)
console = Console(highlight=False)


def _print_error(what: str, exc: Exception) -> None:
    console.print(f"[red]✗ {what}:[/]")
    # Log tails are full of square brackets that rich would take for markup.
    console.print(str(exc), markup=False)


def _print_urls(stack: Stack) -> None:
    layout = stack.layout
    table = Table(title="Loyalty Funnel local stack", show_header=False, box=None)
    for name in SERVICE_NAMES:
        table.add_row(f"{name} API docs", f"{layout.service_url(name)}/docs")
    if stack.sink().is_running():
        table.add_row("SMTP sink (web UI)", f"http://{HOST}:{layout.smtp_ui_port}/")
    if stack.platforms().is_running():
        shop, site = f"http://{HOST}:{layout.shopify_port}", f"http://{HOST}:{layout.woocommerce_port}"
        table.add_row("test Shopify shop (state)", f"{shop}/_test/state")
        table.add_row("test WooCommerce site (state)", f"{site}/_test/state")
    if stack.postgres().is_running():
        table.add_row("PostgreSQL data", str(stack.postgres_data))
    table.add_row("environment", str(layout.root / "env"))
    table.add_row("logs", str(layout.logs))
    console.print(table)


@app.command()
def up(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the services to be ready.")] = 120.0,
) -> None:
    """Start Kafka, Postgres, the SMTP sink and the three services; return once all are ready."""
    stack = Stack(default_layout(), console)
    try:
        stack.up(timeout)
    except StackError as exc:
        _print_error("make up failed", exc)
        console.print(
            f"What did start is still running (`make down` stops it); logs are in {stack.layout.logs}"
        )
        raise typer.Exit(1) from exc
    _print_urls(stack)


@app.command()
def down() -> None:
    """Stop everything `up` started: the supervisor first, then the rest in reverse order."""
    Stack(default_layout(), console).down()


@app.command()
def status() -> None:
    """Show each component: pid, running, ready, restarts by the supervisor."""
    stack = Stack(default_layout(), console)
    restarts = stack.restarts()
    table = Table("component", "pid", "state", "ready", "restarts", "address")
    for process in stack.components():
        pid = process.pid()
        count = str(restarts[process.name]) if process.name in restarts else "-"
        if pid is None:
            table.add_row(process.name, "-", "[dim]stopped[/]", "-", count, "")
            continue
        ready, address = stack.readiness(process)
        shown = "[green]yes[/]" if ready else "[red]no[/]"
        table.add_row(process.name, str(pid), "[green]running[/]", shown, count, address)
    console.print(table)
    console.print(f"[cyan]•[/] PostgreSQL data: {stack.postgres_data}")
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SMTP_HOST"):
        if os.environ.get(name):
            console.print(f"[cyan]•[/] {name} is set: `up` uses that instead of a local one")


@app.command("kafka-jars", hidden=True)
def kafka_jars() -> None:
    """Fetch Kafka's jars (make kafka-jars)."""
    try:
        console.print(f"Kafka jars in {ensure_kafka_jars(DEFAULT_LIBS_DIR)}")
    except StackError as exc:
        _print_error("failed", exc)
        raise typer.Exit(1) from exc


@app.command("postgres-binaries", hidden=True)
def postgres_binaries() -> None:
    """Make sure PostgreSQL's server binaries are installed (make postgres)."""
    try:
        console.print(f"PostgreSQL binaries in {ensure_postgres_binaries()}")
    except StackError as exc:
        _print_error("failed", exc)
        raise typer.Exit(1) from exc

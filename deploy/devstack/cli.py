"""`python -m deploy.devstack up|down|status`: the local stack behind `make up` / `make down`.

Everything lives under .run/stack/ (pidfiles, data, logs/). Kafka, Postgres and the SMTP sink are
started only when KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, or SMTP_HOST+SMTP_PORT do not point elsewhere.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deploy.devstack.kafka import (
    DEFAULT_LIBS_DIR,
    broker_answers,
    ensure_kafka_jars,
    kafka_process,
    start_kafka,
)
from deploy.devstack.postgres import ensure_postgres_binaries, postgres_process, start_postgres
from deploy.devstack.process import (
    ManagedProcess,
    StackError,
    ensure_port_free,
    http_ok,
    port_is_open,
    run_checked,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = REPO_ROOT / ".run" / "stack"
LOGS_DIR = STACK_DIR / "logs"
HOST = "127.0.0.1"
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
POSTGRES_PORT = 55432
SMTP_PORT = 1025
SMTP_UI_PORT = 8025
# The test shop and site the development registry's `demo` store is connected to (deploy/platforms).
SHOPIFY_PORT = 8010
WOOCOMMERCE_PORT = 8011
DEFAULT_STORES_FILE = REPO_ROOT / "deploy" / "stores.dev.yaml"


@dataclass(frozen=True)
class Service:
    name: str
    port: int

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def process(self) -> ManagedProcess:
        return ManagedProcess(self.name, STACK_DIR / f"{self.name}.pid", LOGS_DIR / f"{self.name}.log")


SERVICES = (Service("ingest", 8000), Service("segmenter", 8001), Service("notifier", 8002))
# Each owns a schema and an Alembic history; ingest has no database.
MIGRATED = ("segmenter", "notifier")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The local stack behind make up / make down / make status; state in .run/stack/.",
)
console = Console(highlight=False)


def _kafka() -> ManagedProcess:
    return kafka_process(STACK_DIR / "kafka", LOGS_DIR / "kafka.log")


def _postgres() -> ManagedProcess:
    return postgres_process(STACK_DIR / "postgres", LOGS_DIR / "postgres.log")


def _sink() -> ManagedProcess:
    return ManagedProcess("smtp-sink", STACK_DIR / "smtp-sink.pid", LOGS_DIR / "smtp-sink.log")


def _platforms() -> ManagedProcess:
    return ManagedProcess("platforms", STACK_DIR / "platforms.pid", LOGS_DIR / "platforms.log")


def _up_platforms() -> None:
    """The demo store's Shopify shop and WooCommerce site, so its coupons and consent take effect somewhere
    the demo can show (as the SMTP sink shows its emails)."""
    process, began = _platforms(), time.monotonic()
    if process.is_running():
        _say_running(process)
        return
    ensure_port_free(HOST, SHOPIFY_PORT, "test Shopify shop")
    ensure_port_free(HOST, WOOCOMMERCE_PORT, "test WooCommerce site")
    argv = [sys.executable, "-m", "deploy.platforms", "--host", HOST]
    argv += ["--shopify-port", str(SHOPIFY_PORT), "--woocommerce-port", str(WOOCOMMERCE_PORT)]
    process.start(argv, cwd=REPO_ROOT)
    process.wait_for_http(f"http://{HOST}:{SHOPIFY_PORT}/healthz", 30)
    process.wait_for_http(f"http://{HOST}:{WOOCOMMERCE_PORT}/healthz", 30)
    _say_started(process, began)


def _print_error(what: str, exc: Exception) -> None:
    console.print(f"[red]✗ {what}:[/]")
    # Log tails are full of square brackets that rich would take for markup.
    console.print(str(exc), markup=False)


def _say_running(process: ManagedProcess) -> None:
    console.print(f"[green]✓[/] {process.name} already running (pid {process.pid()})")


def _say_started(process: ManagedProcess, began: float, verb: str = "started") -> None:
    took = time.monotonic() - began
    console.print(f"[green]✓[/] {process.name} {verb} (pid {process.pid()}) in {took:.1f} s")


def _up_kafka() -> str:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        console.print(f"[cyan]•[/] kafka: using KAFKA_BOOTSTRAP_SERVERS={external}")
        return external
    process, began = _kafka(), time.monotonic()
    was_running = process.is_running()
    broker = start_kafka(
        STACK_DIR / "kafka",
        KAFKA_PORT,
        KAFKA_CONTROLLER_PORT,
        libs_dir=DEFAULT_LIBS_DIR,
        log_file=process.logfile,
    )
    if was_running:
        _say_running(process)
    else:
        _say_started(process, began)
    return broker.bootstrap_servers


def _up_postgres() -> str:
    external = os.environ.get("DATABASE_URL")
    if external:
        console.print("[cyan]•[/] postgres: using DATABASE_URL from the environment")
        return external
    process, began = _postgres(), time.monotonic()
    was_running = process.is_running()
    server = start_postgres(STACK_DIR / "postgres", POSTGRES_PORT, log_file=process.logfile)
    if was_running:
        _say_running(process)
    else:
        _say_started(process, began)
    return server.url


def _up_sink() -> tuple[str, str]:
    host, port = os.environ.get("SMTP_HOST"), os.environ.get("SMTP_PORT")
    if host and port:
        console.print(f"[cyan]•[/] smtp: using SMTP_HOST={host} SMTP_PORT={port}")
        return host, port
    process, began = _sink(), time.monotonic()
    if process.is_running():
        _say_running(process)
    else:
        ensure_port_free(HOST, SMTP_PORT, "smtp-sink")
        ensure_port_free(HOST, SMTP_UI_PORT, "smtp-sink web UI")
        argv = [sys.executable, "-m", "deploy.devstack.smtp_sink", "--host", HOST]
        argv += ["--smtp-port", str(SMTP_PORT), "--http-port", str(SMTP_UI_PORT)]
        argv += ["--dir", str(STACK_DIR / "smtp-sink" / "messages")]
        process.start(argv, cwd=REPO_ROOT)
        process.wait_for_port(HOST, SMTP_PORT, 30)
        process.wait_for_http(f"http://{HOST}:{SMTP_UI_PORT}/healthz", 30)
        _say_started(process, began)
    return HOST, str(SMTP_PORT)


def _migrate(service: Service, env: dict[str, str]) -> None:
    began = time.monotonic()
    log = LOGS_DIR / f"migrate-{service.name}.log"
    try:
        output = run_checked(
            [sys.executable, "-m", service.module, "migrate"],
            what=f"{service.module} migrate",
            env=env,
            cwd=REPO_ROOT,
            timeout=300,
        )
    except StackError as exc:
        log.write_text(str(exc) + "\n")
        raise
    log.write_text(output)
    console.print(f"[green]✓[/] {service.name} migrations applied in {time.monotonic() - began:.1f} s")


def _write_env_file(env: dict[str, str]) -> None:
    # For people and scripts that want to talk to this stack: `set -a; . .run/stack/env; set +a`.
    (STACK_DIR / "env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))


def _service_env() -> dict[str, str]:
    bootstrap = _up_kafka()
    database_url = _up_postgres()
    smtp_host, smtp_port = _up_sink()
    _up_platforms()
    stack_env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "SMTP_HOST": smtp_host,
        "SMTP_PORT": smtp_port,
        "STORES_FILE": os.environ.get("STORES_FILE") or str(DEFAULT_STORES_FILE),
    }
    _write_env_file(stack_env)
    return {**os.environ, **stack_env, "PYTHONUNBUFFERED": "1"}


def _up_services(env: dict[str, str], timeout: float) -> None:
    to_start = [service for service in SERVICES if not service.process().is_running()]
    for service in to_start:
        ensure_port_free(HOST, service.port, service.name)
    # Every schema is in place before any service starts: one may read what another's events produce.
    for service in to_start:
        if service.name in MIGRATED:
            _migrate(service, env)
    started: dict[str, float] = {}
    for service in SERVICES:
        process = service.process()
        if service in to_start:
            process.start([sys.executable, "-m", service.module, "serve"], env=env, cwd=REPO_ROOT)
            started[service.name] = time.monotonic()
        else:
            _say_running(process)
    deadline = time.monotonic() + timeout
    for service in SERVICES:
        process = service.process()
        process.wait_for_http(f"{service.base_url}/readyz", max(deadline - time.monotonic(), 1.0))
        if service.name in started:
            _say_started(process, started[service.name], "ready")


def _print_urls() -> None:
    table = Table(title="Loyalty Funnel local stack", show_header=False, box=None)
    for service in SERVICES:
        table.add_row(f"{service.name} API docs", f"{service.base_url}/docs")
    if _sink().is_running():
        table.add_row("SMTP sink (web UI)", f"http://{HOST}:{SMTP_UI_PORT}/")
    if _platforms().is_running():
        table.add_row("test Shopify shop (state)", f"http://{HOST}:{SHOPIFY_PORT}/_test/state")
        table.add_row("test WooCommerce site (state)", f"http://{HOST}:{WOOCOMMERCE_PORT}/_test/state")
    table.add_row("environment", str(STACK_DIR / "env"))
    table.add_row("logs", str(LOGS_DIR))
    console.print(table)


@app.command()
def up(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the services to be ready.")] = 120.0,
) -> None:
    """Start Kafka, Postgres, the SMTP sink and the three services; return once all are ready."""
    LOGS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        env = _service_env()
        _up_services(env, timeout)
    except StackError as exc:
        _print_error("make up failed", exc)
        console.print(f"What did start is still running (`make down` stops it); logs are in {LOGS_DIR}")
        raise typer.Exit(1) from exc
    _print_urls()


def _components() -> list[ManagedProcess]:
    """Every process `up` may have started, in start order."""
    return [_kafka(), _postgres(), _sink(), _platforms(), *(service.process() for service in SERVICES)]


@app.command()
def down() -> None:
    """Stop everything `up` started, in reverse order."""
    for process in reversed(_components()):
        pid = process.pid()
        if process.stop(timeout=30.0):
            console.print(f"[green]✓[/] stopped {process.name} (pid {pid})")
        else:
            console.print(f"[dim]• {process.name} was not running[/]")


def _readiness(process: ManagedProcess) -> tuple[bool, str]:
    if process.name == "kafka":
        address = f"{HOST}:{KAFKA_PORT}"
        return broker_answers(address), address
    if process.name == "postgres":
        return port_is_open(HOST, POSTGRES_PORT), f"{HOST}:{POSTGRES_PORT}"
    if process.name == "smtp-sink":
        address = f"smtp {HOST}:{SMTP_PORT}, ui :{SMTP_UI_PORT}"
        return http_ok(f"http://{HOST}:{SMTP_UI_PORT}/healthz"), address
    if process.name == "platforms":
        address = f"shopify :{SHOPIFY_PORT}, woocommerce :{WOOCOMMERCE_PORT}"
        return http_ok(f"http://{HOST}:{SHOPIFY_PORT}/healthz"), address
    service = next(s for s in SERVICES if s.name == process.name)
    return http_ok(f"{service.base_url}/readyz"), service.base_url


@app.command()
def status() -> None:
    """Show each component: pid, running, ready."""
    table = Table("component", "pid", "state", "ready", "address")
    for process in _components():
        pid = process.pid()
        if pid is None:
            table.add_row(process.name, "-", "[dim]stopped[/]", "-", "")
            continue
        ready, address = _readiness(process)
        shown = "[green]yes[/]" if ready else "[red]no[/]"
        table.add_row(process.name, str(pid), "[green]running[/]", shown, address)
    console.print(table)
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

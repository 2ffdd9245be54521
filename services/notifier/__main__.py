"""`python -m services.notifier serve|migrate|check-templates|reload`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import typer
from rich.console import Console

from services.notifier.adapters.pidfile import NoRunningProcess, running_pid
from services.notifier.adapters.templates import TemplateProblem, TemplateRenderer
from services.notifier.entrypoints.api import create_app
from services.notifier.entrypoints.reload import load_checked, status_path
from services.notifier.settings import NotifierSettings
from shared.service_cli import service_cli
from shared.stores import StoreRegistryError

cli = service_cli(
    "notifier",
    "Loyalty Funnel notifier: personalised messages from funnel changes.",
    NotifierSettings,
    create_app,
    lambda s: (s.notifier_host, s.notifier_port),
    Path(__file__).resolve().parent / "migrations",
)
console = Console(stderr=True)


def _check(settings: NotifierSettings) -> int:
    try:
        registry = load_checked(
            settings.stores_file, production=settings.environment == "production", renderer=TemplateRenderer()
        )
    except TemplateProblem as exc:
        for problem in exc.problems:
            console.print(f"[red]✗[/red] {problem}", highlight=False)
        return 1
    except StoreRegistryError as exc:
        console.print(f"[red]✗[/red] {exc}", highlight=False)
        return 1
    console.print(f"[green]✓[/green] registry and templates of {len(list(registry))} store(s) are valid")
    return 0


@cli.command("check-templates")
def check_templates() -> None:
    """Validate the registry (STORES_FILE) and every store's templates as a start or reload would (CI)."""
    raise typer.Exit(_check(NotifierSettings()))


@cli.command()
def reload(
    wait_seconds: float = typer.Option(30.0, help="How long to wait for the running notifier's answer."),
) -> None:
    """Reload the registry and templates of the running notifier (SIGHUP), after validating them here.

    Exit status: 0 reloaded; 1 invalid (the running notifier keeps its version); 2 no running notifier."""
    settings = NotifierSettings()
    if _check(settings) != 0:
        console.print("nothing reloaded: the running notifier keeps its registry and templates")
        raise typer.Exit(1)
    pidfile = settings.pidfile
    try:
        # Only a pid whose notifier still holds the file: a stale one may name an unrelated process now.
        pid = running_pid(pidfile)
    except NoRunningProcess as exc:
        console.print(f"[red]✗[/red] no running notifier: {exc}", highlight=False)
        console.print(
            "  (NOTIFIER_PIDFILE sets the file; by default .run/notifier-<port>.pid)", highlight=False
        )
        raise typer.Exit(2) from None
    status = status_path(pidfile)
    before = status.read_text() if status.exists() else None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:  # it ended between the two calls
        console.print(f"[red]✗[/red] no process {pid} (stale {pidfile})")
        raise typer.Exit(2) from None
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        now = status.read_text() if status.exists() else None
        if now is not None and now != before:
            outcome = json.loads(now)
            if outcome["ok"]:
                console.print(
                    f"[green]✓[/green] notifier {pid} reloaded (generation {outcome['generation']})"
                )
                raise typer.Exit(0)
            for problem in outcome["problems"]:
                console.print(f"[red]✗[/red] {problem}", highlight=False)
            console.print("the running notifier keeps its registry and templates")
            raise typer.Exit(1)
        time.sleep(0.2)
    console.print(f"[red]✗[/red] notifier {pid} did not answer within {wait_seconds:.0f} s")
    raise typer.Exit(1)


if __name__ == "__main__":
    cli()

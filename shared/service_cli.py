"""The command line every database-backed service shares: `serve` and `migrate`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import typer
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from shared.cli import serve as serve_app
from shared.db import build_engine, upgrade_to_head
from shared.db_collation import report_database_collation
from shared.logging import configure_logging, get_logger
from shared.settings import DatabaseSettings


class _ServiceSettings(Protocol):
    @property
    def database_url(self) -> str: ...
    @property
    def log_level(self) -> str: ...
    @property
    def http_request_read_timeout_seconds(self) -> float: ...


SettingsT = TypeVar("SettingsT", bound=_ServiceSettings)


def service_cli(
    name: str,
    help_text: str,
    settings_factory: Callable[[], SettingsT],
    app_factory: Callable[[SettingsT], FastAPI],
    address: Callable[[SettingsT], tuple[str, int]],
    migrations: Path,
) -> typer.Typer:
    cli = typer.Typer(help=help_text, no_args_is_help=True)

    @cli.command()
    def serve() -> None:
        """Serve the HTTP API and run the background consumers."""
        settings = settings_factory()
        configure_logging(name, settings.log_level)
        host, port = address(settings)
        serve_app(app_factory(settings), host, port, settings.http_request_read_timeout_seconds)

    @cli.command()
    def migrate(
        wait_seconds: float = typer.Option(60.0, help="How long to wait for Postgres to accept connections."),
    ) -> None:
        """Apply this service's Alembic migrations (schema and version table of its own)."""
        settings = settings_factory()
        configure_logging(name, settings.log_level)
        log = get_logger(name)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                upgrade_to_head(migrations, settings.database_url)
            except (OperationalError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("migrate_waiting_for_postgres", error=type(exc).__name__)
                time.sleep(1)
                continue
            log.info("migrated", service=name)
            # Where a deployment's first output is read: say here too if the database is not in C.
            asyncio.run(_report_collation(settings.database_url))
            return

    return cli


async def _report_collation(database_url: str) -> None:
    # The services' own engine (their connect and statement timeouts), with the one connection it needs.
    engine = build_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    try:
        await report_database_collation(engine, wait_for_outages=False)
    finally:
        await engine.dispose()

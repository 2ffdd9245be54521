"""`python -m services.ingest serve`."""

from __future__ import annotations

import logging

import typer
import uvicorn
from fastapi import FastAPI

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from shared import read_deadline
from shared.cli import serve as serve_app
from shared.cli import tune_garbage_collector
from shared.logging import configure_logging

cli = typer.Typer(
    help="Loyalty Funnel ingest: storefront webhooks and the Segment API to Kafka.", no_args_is_help=True
)


@cli.command()
def serve() -> None:
    """Serve the HTTP API (INGEST_HOST:INGEST_PORT, default 127.0.0.1:8000); INGEST_WORKERS processes."""
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level)
    if settings.ingest_workers == 1:
        serve_app(
            create_app(settings),
            settings.ingest_host,
            settings.ingest_port,
            settings.http_request_read_timeout_seconds,
        )
        return
    # Ingest is stateless: several processes may share the port, each with its own Kafka producer. Each
    # keeps its own Prometheus counters (a scrape sees one process) and its own per-store rate limit.
    uvicorn.run(
        "services.ingest.__main__:app_from_environment",
        factory=True,
        workers=settings.ingest_workers,
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # X-Forwarded-For is weighed by the rate limit's TRUSTED_PROXIES (shared/ratelimit.py) alone;
        # uvicorn would otherwise believe it from any loopback peer.
        proxy_headers=False,
        # Each worker sets its deadline from the environment when it makes its app (below).
        http=read_deadline.RequestReadDeadline,
    )


def app_from_environment() -> FastAPI:
    """One worker's app when INGEST_WORKERS > 1 (uvicorn imports this in each worker process)."""
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level)
    # uvicorn.run(access_log=False) silences the access logger in the parent process only; a spawned
    # worker's uvicorn logs each request when that logger has a handler, which our root handler gives it.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    read_deadline.configure(settings.http_request_read_timeout_seconds)
    tune_garbage_collector()
    return create_app(settings)


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo("loyalty-funnel ingest 0.1.0")


if __name__ == "__main__":
    cli()

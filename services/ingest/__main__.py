"""`python -m services.ingest serve`."""

from __future__ import annotations

import typer

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from shared.cli import serve as serve_app
from shared.logging import configure_logging

cli = typer.Typer(
    help="Loyalty Funnel ingest: storefront webhooks and the Segment API to Kafka.", no_args_is_help=True
)


@cli.command()
def serve() -> None:
    """Serve the HTTP API (INGEST_HOST:INGEST_PORT, default 127.0.0.1:8000)."""
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level)
    serve_app(create_app(settings), settings.ingest_host, settings.ingest_port)


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo("loyalty-funnel ingest 0.1.0")


if __name__ == "__main__":
    cli()

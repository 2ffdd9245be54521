"""`python -m services.notifier serve|migrate`."""

from __future__ import annotations

from pathlib import Path

from services.notifier.entrypoints.api import create_app
from services.notifier.settings import NotifierSettings
from shared.service_cli import service_cli

cli = service_cli(
    "notifier",
    "Loyalty Funnel notifier: personalised messages from funnel changes.",
    NotifierSettings,
    create_app,
    lambda s: (s.notifier_host, s.notifier_port),
    Path(__file__).resolve().parent / "migrations",
)

if __name__ == "__main__":
    cli()

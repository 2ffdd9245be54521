"""`python -m services.segmenter serve|migrate`."""

from __future__ import annotations

from pathlib import Path

from services.segmenter.entrypoints.api import create_app
from services.segmenter.settings import SegmenterSettings
from shared.service_cli import service_cli

cli = service_cli(
    "segmenter",
    "Loyalty Funnel segmenter: customers' funnel stages from storefront events.",
    SegmenterSettings,
    create_app,
    lambda s: (s.segmenter_host, s.segmenter_port),
    Path(__file__).resolve().parent / "migrations",
)

if __name__ == "__main__":
    cli()

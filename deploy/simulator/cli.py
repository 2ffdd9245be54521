"""`python -m deploy.simulator`: generate a believable store history and send it to ingest."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deploy.simulator.generator import SimulationConfig
from deploy.simulator.run import SendOptions, build, load_target, run, summary
from deploy.simulator.sender import SendFailed
from shared.settings import StoresSettings

# Seeds own disjoint id blocks (see people.customer_id_for); this bound keeps every id a signed 64-bit int.
MAX_SEED = 999_999

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False)


def parse_end(value: str | None) -> datetime:
    """ISO 8601 (UTC when no offset); None is now, to the second."""
    if value is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 date or time: {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@app.command()
def simulate(
    customers: Annotated[int, typer.Option(min=1, max=1_000_000, help="Customers to simulate.")] = 500,
    days: Annotated[float, typer.Option(min=1, max=3650, help="Days of history, ending at --end.")] = 365,
    seed: Annotated[
        int,
        typer.Option(
            min=0, max=MAX_SEED, help="Same seed, same store (and the same ids: re-sending is a no-op)."
        ),
    ] = 1,
    end: Annotated[
        str | None, typer.Option(help="When the history ends (ISO 8601, UTC if no offset). Default: now.")
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0, help="Storefront calls per second; 0 = as fast as possible.")
    ] = 0,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=64, help="Requests in flight (lanes; one customer always uses one lane)."),
    ] = 8,
    batch_size: Annotated[
        int, typer.Option(min=1, max=2500, help="Segment calls per /v1/batch request.")
    ] = 250,
    shopify_days: Annotated[
        float,
        typer.Option(
            min=0, help="The last N days' orders, checkouts, refunds and sign-ups go as Shopify webhooks."
        ),
    ] = 14,
    ingest_url: Annotated[
        str, typer.Option(envvar="INGEST_URL", help="Base URL of ingest.")
    ] = "http://127.0.0.1:8000",
    store: Annotated[str, typer.Option(help="Store id in the registry.")] = "demo",
    stores_file: Annotated[
        Path | None,
        typer.Option(help="Store registry (YAML). Default: $STORES_FILE or deploy/stores.dev.yaml."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the requests as JSON lines (to --out, else stdout).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the requests as JSON lines here instead of sending.")
    ] = None,
) -> None:
    """Simulate a store's customers — browsers, one-off buyers, repeaters, loyalists, churners — with their
    visits, carts, orders, refunds, surveys, birthdays and referrals, and send them to ingest as signed
    Shopify webhooks and Segment batches."""
    config = SimulationConfig(seed=seed, customers=customers, days=days, end=parse_end(end))
    options = SendOptions(
        ingest_url=ingest_url.rstrip("/"),
        concurrency=concurrency,
        rate=rate,
        batch_size=batch_size,
        shopify_days=shopify_days,
    )
    try:
        target = load_target(stores_file or StoresSettings().stores_file, store)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--store/--stores-file") from exc
    if dry_run or out is not None:
        history, plan = build(config, target, options)
        lines = (json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in plan.requests())
        if out is None:
            sys.stdout.writelines(lines)
        else:
            with out.open("w", encoding="utf-8") as handle:
                handle.writelines(lines)
            Console(stderr=True).print(summary(history, plan))
        return
    console = Console()
    try:
        result = run(config, target, options, console)
    except SendFailed as failure:
        console.print(f"[red]ingest refused a request:[/red] {failure}")
        raise typer.Exit(1) from None
    stats = result.stats
    speed = stats.calls / max(result.seconds, 1e-9)
    console.print(
        f"Sent {stats.calls:,} calls ({stats.events:,} events) in {stats.requests:,} requests in "
        f"{result.seconds:.1f} s ({speed:,.0f} calls/s, {stats.retries} retries)."
    )

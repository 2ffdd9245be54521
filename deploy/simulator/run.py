"""Wiring for the CLI and the demo: the store from the registry, the plan, the send with a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from deploy.simulator.generator import SimulationConfig, StoreHistory, generate
from deploy.simulator.http_plan import RequestPlan, StoreTarget, plan_requests
from deploy.simulator.sender import Pace, Sender, SendStats
from shared.stores import StoreRegistry


@dataclass(frozen=True)
class SendOptions:
    ingest_url: str
    concurrency: int = 8
    rate: float = 0.0
    batch_size: int = 250
    shopify_days: float = 14.0


@dataclass(frozen=True)
class RunResult:
    history: StoreHistory
    plan: RequestPlan
    stats: SendStats
    seconds: float


def load_target(stores_file: Path, store_id: str) -> StoreTarget:
    """The store's shop domain and secrets from the registry the services use, never copied elsewhere."""
    store = StoreRegistry.load(stores_file).get(store_id)
    if store is None:
        raise ValueError(f"{stores_file} has no store {store_id!r}")
    if store.shopify is None or store.segment is None:
        raise ValueError(
            f"store {store_id!r} needs both a Shopify shop and a Segment write key in {stores_file}"
        )
    return StoreTarget(
        store_id=store.store_id,
        shop_domain=store.shopify.shop_domain,
        webhook_secret=store.shopify.webhook_secret.get_secret_value(),
        write_key=store.segment.write_key.get_secret_value(),
        currency=store.currency,
    )


def build(
    config: SimulationConfig, target: StoreTarget, options: SendOptions
) -> tuple[StoreHistory, RequestPlan]:
    history = generate(config)
    plan = plan_requests(
        history,
        target,
        lanes=options.concurrency,
        batch_size=options.batch_size,
        shopify_since=config.end - timedelta(days=options.shopify_days),
    )
    return history, plan


class _CallsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} calls/s" if speed else "", style="progress.data.speed")


def progress_bar(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _CallsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


async def send(
    plan: RequestPlan, options: SendOptions, console: Console, what: str = "Sending to ingest"
) -> SendStats:
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=options.ingest_url, timeout=30.0, limits=limits) as client:
        with progress_bar(console) as progress:
            task = progress.add_task(what, total=plan.calls)
            sender = Sender(client, Pace(options.rate), on_sent=lambda r: progress.advance(task, r.calls))
            return await sender.send_plan(plan)


def run(config: SimulationConfig, target: StoreTarget, options: SendOptions, console: Console) -> RunResult:
    history, plan = build(config, target, options)
    console.print(summary(history, plan))
    began = time.monotonic()
    stats = asyncio.run(send(plan, options, console))
    return RunResult(history=history, plan=plan, stats=stats, seconds=time.monotonic() - began)


def _counts(title: str, counts: Counter[str]) -> Table:
    table = Table(title=title, show_header=False, box=None, padding=(0, 1))
    table.add_column(title)
    table.add_column("n", justify="right")
    for name, n in counts.most_common():
        table.add_row(name, f"{n:,}")
    return table


def summary(history: StoreHistory, plan: RequestPlan) -> RenderableType:
    config = history.config
    heading = (
        f"[bold]Simulated store[/bold]: seed {config.seed}, {config.customers:,} customers, "
        f"{config.start:%Y-%m-%d} → {config.end:%Y-%m-%d %H:%M} UTC; "
        f"{plan.calls:,} storefront calls ({plan.events:,} events)"
    )
    personas = Counter(s.persona.value for s in history.shoppers)
    actions = Counter(type(a).__name__ for a in history.actions())
    requests = Counter(r.label for r in plan.requests())
    columns = Columns(
        [_counts("personas", personas), _counts("actions", actions), _counts("requests", requests)]
    )
    return Group(Text.from_markup(heading), columns)

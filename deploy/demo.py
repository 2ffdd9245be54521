"""`make demo`: a simulated store's history goes through the public endpoints of the local stack, then the
funnel report: customers per stage and health, retention, messages per flow, coupons, audiences, emails.

1. The storefront simulator (deploy/simulator) generates a few thousand customers over the last 18 months,
   ending now, and sends them as Segment batches and signed Shopify webhooks.
2. The demo waits until the segmenter has consumed every event and the notifier's counts settle (cart
   abandonment fires 20 s after the last cart activity in the development registry, delayed flows within a
   minute).
3. Some customers answer the emails they just got: they order again, redeeming their coupon.
4. The report, from the services' own APIs; an endpoint that is not there yet shows "n/a".

Each run uses a new seed (so new customers and fresh emails); `--seed` replays one, which ingest and the
segmenter deduplicate.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console

from deploy.simulator import report
from deploy.simulator.actions import OrderPlaced, Session
from deploy.simulator.cli import MAX_SEED
from deploy.simulator.generator import SimulationConfig, StoreHistory
from deploy.simulator.http_plan import StoreTarget, plan_requests
from deploy.simulator.people import Shopper
from deploy.simulator.responses import Coupon, Invitation, responses
from deploy.simulator.run import SendOptions, load_target, run, send
from deploy.simulator.sender import SendFailed
from shared.settings import StoresSettings
from shared.stores import StoreConfig, StoreRegistry

# Piped to a file or a CI log, rich would wrap at 80 columns; the report's tables want more.
console = Console(width=None if Console().is_terminal else 120)

# Flows delayed by more than this (production: days) are not waited for.
LONGEST_DELAY_WAITED = timedelta(minutes=3)
QUIET_SECONDS = 5.0
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Endpoints:
    ingest: str
    segmenter: str
    notifier: str
    sink: str


class Services:
    """The read side of the stack, as the report needs it: JSON or None (404 or unreachable) with why."""

    def __init__(self, client: httpx.Client, endpoints: Endpoints, store: StoreConfig, api_key: str) -> None:
        self.client = client
        self.urls = endpoints
        self.store_id = store.store_id
        self.api_key = api_key
        self.auth = {"Authorization": f"Bearer {api_key}"}

    def get(self, url: str, **params: str) -> tuple[Any, str]:
        try:
            response = self.client.get(url, headers=self.auth, params=params)
        except httpx.HTTPError as exc:
            return None, f"unreachable: {type(exc).__name__}"
        if response.status_code == 404:
            return None, "404: not served yet"
        if not response.is_success:
            return None, f"HTTP {response.status_code}"
        return response.json(), ""

    def store_path(self, base: str, path: str) -> str:
        return f"{base}/v1/stores/{self.store_id}{path}"

    def funnel(self) -> tuple[Any, str]:
        return self.get(self.store_path(self.urls.segmenter, "/funnel"))

    def retention(self, days: int = 90) -> tuple[Any, str]:
        end = datetime.now(UTC)
        start = end - timedelta(days=days)
        return self.get(
            self.store_path(self.urls.segmenter, "/metrics/retention"),
            start=start.isoformat(),
            end=end.isoformat(),
        )

    def flows(self) -> tuple[Any, str]:
        return self.get(self.store_path(self.urls.notifier, "/flows"))

    def audiences(self) -> tuple[Any, str]:
        return self.get(self.store_path(self.urls.notifier, "/audiences"))

    def coupons(self, customer_id: str) -> tuple[Any, str]:
        return self.get(self.store_path(self.urls.notifier, f"/customers/{customer_id}/coupons"))

    def emails(self) -> tuple[Any, str]:
        return self.get(f"{self.urls.sink}/api/messages")

    def consumed(self) -> float | None:
        """Storefront events the segmenter consumed since it started (its Prometheus counter)."""
        try:
            text = self.client.get(f"{self.urls.segmenter}/metrics").text
        except httpx.HTTPError:
            return None
        lines = (line for line in text.splitlines() if line.startswith("consumer_messages_total{"))
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'consumer="segmenter"' in line)

    def snapshot(self) -> tuple[object, ...]:
        """What changes while the pipeline is still busy: funnel cells, flow counts, emails received."""
        funnel, _ = self.funnel()
        flows, _ = self.flows()
        emails, _ = self.emails()
        return (
            tuple(sorted((c["stage"], c["health"], c["customers"]) for c in (funnel or {}).get("cells", []))),
            tuple(
                sorted((f["flow"], f.get("sent"), f.get("pending"), f.get("planned")) for f in flows or [])
            ),
            len(emails or []),
        )

    def pending(self) -> int:
        flows, _ = self.flows()
        return sum(int(f.get("pending") or 0) for f in flows or [])


def wait_until_settled(
    services: Services,
    consumed_target: float | None,
    *,
    settle_after: float,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Until the segmenter consumed `consumed_target` events and nothing changed for QUIET_SECONDS; while
    messages are pending, until `settle_after` (a monotonic time: the end of the flows' delays) too.
    False when `timeout` passed first."""
    deadline = clock() + timeout
    with console.status("Waiting for the segmenter and the notifier to catch up") as status:
        while clock() < deadline:
            consumed = services.consumed()
            if consumed_target is None or consumed is None or consumed >= consumed_target:
                break
            status.update(f"The segmenter has {consumed_target - consumed:,.0f} events to go")
            sleep(POLL_SECONDS)
        last, since = services.snapshot(), clock()
        while clock() < deadline:
            sleep(POLL_SECONDS)
            now = services.snapshot()
            if now != last:
                last, since = now, clock()
                continue
            waiting_for_delays = clock() < settle_after and services.pending() > 0
            status.update("Waiting for delayed flows" if waiting_for_delays else "Letting the counts settle")
            if clock() - since >= QUIET_SECONDS and not waiting_for_delays:
                return True
    return False


def _longest_short_delay(store: StoreConfig) -> float:
    delays = [f.delay for f in store.notifier.flows.values() if f.enabled and f.delay <= LONGEST_DELAY_WAITED]
    return max(delays, default=timedelta(0)).total_seconds()


def invitations(services: Services, history: StoreHistory) -> list[Invitation]:
    """This run's customers who got an email, with the coupons they have not used yet."""
    messages, _ = services.emails()
    by_email = {s.email: s for s in history.shoppers}
    invited: dict[int, Shopper] = {}
    for message in messages or []:
        for address in message.get("to", []):
            shopper = by_email.get(address.lower())
            if shopper is not None:
                invited[shopper.number] = shopper
    orders = Counter(a.shopper.number for a in history.actions() if isinstance(a, OrderPlaced))
    found = []
    for shopper in invited.values():
        held, _ = services.coupons(shopper.user_id)
        coupons = tuple(
            Coupon(code=c["code"], kind=c["kind"], value=Decimal(str(c["value"])))
            for c in held or []
            if c.get("redeemed_at") is None
        )
        found.append(Invitation(shopper=shopper, orders_so_far=orders[shopper.number], coupons=coupons))
    return found


def test_shop_url(store: StoreConfig) -> str | None:
    """The local test shop the store is connected to (make up runs it), else None: a real shop's checkout
    is the customer's to use, not ours."""
    if store.shopify is None or not store.shopify.connected:
        return None
    parts = urlsplit(store.shopify.admin_url)
    return (
        f"http://{parts.netloc}"
        if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
        else None
    )


def checkout_at_shop(client: httpx.Client, shop_url: str, sessions: list[Session]) -> list[Session]:
    """Each customer first applies their code at the test shop's checkout, as a real shop would check it
    (exists, theirs, in date, not used): an order carries only a code the shop accepted."""
    checked = []
    for session in sessions:
        actions = []
        for action in session.actions:
            if isinstance(action, OrderPlaced) and action.discount_code:
                answer = client.post(
                    f"{shop_url}/_test/checkout",
                    json={"code": action.discount_code, "customer_id": session.shopper.user_id},
                )
                if answer.status_code != 200:
                    action = replace(action, discount_code=None, discount=Decimal("0"))
            actions.append(action)
        checked.append(replace(session, actions=tuple(actions)))
    return checked


def answer_emails(
    services: Services,
    history: StoreHistory,
    target: StoreTarget,
    options: SendOptions,
    shop_url: str | None = None,
) -> tuple[int, int]:
    """Some customers who got an email order now; (orders, coupons redeemed). Sent as Shopify webhooks."""
    invited = invitations(services, history)
    now = datetime.now(UTC)
    sessions = responses(history.config.seed, invited, now)
    if not sessions:
        return 0, 0
    if shop_url is not None:
        sessions = checkout_at_shop(services.client, shop_url, list(sessions))
    answers = StoreHistory(config=history.config, shoppers=history.shoppers, sessions=tuple(sessions))
    plan = plan_requests(
        answers,
        target,
        lanes=options.concurrency,
        batch_size=options.batch_size,
        shopify_since=now - timedelta(days=1),
    )
    asyncio.run(send(plan, options, console, "Customers answering their emails"))
    redeemed = sum(1 for s in sessions for a in s.actions if isinstance(a, OrderPlaced) and a.discount_code)
    return len(sessions), redeemed


def print_report(services: Services, history: StoreHistory, store: StoreConfig) -> None:
    funnel, why_funnel = services.funnel()
    retention, why_retention = services.retention()
    flows, why_flows = services.flows()
    audiences, why_audiences = services.audiences()
    emails, why_emails = services.emails()
    if emails is None and os.environ.get("SMTP_HOST"):
        why_emails = "SMTP_HOST points at your own server: look there"
    console.rule(f"[bold]Loyalty Funnel: store {store.store_id!r} ({store.name})")
    console.print(report.funnel_table(funnel, why_funnel))
    console.print(report.retention_table(retention, why_retention))
    console.print(report.flows_table(flows, why_flows))
    console.print(report.audiences_table(audiences, why_audiences))
    console.print(report.emails_table(emails, {s.email: s.first_name for s in history.shoppers}, why_emails))
    shop_url = test_shop_url(store)
    if shop_url is not None:
        _print_shop(services.client, shop_url)
    urls = services.urls
    console.print(
        report.links(
            urls.ingest,
            urls.segmenter,
            urls.notifier,
            urls.sink,
            services.api_key,
            store.store_id,
        )
    )


def _print_shop(client: httpx.Client, shop_url: str) -> None:
    """What took effect in the (test) shop: the codes created there, for whom, and those used at its
    checkout; and the customers whose unsubscribe reached its consent."""
    try:
        state = client.get(f"{shop_url}/_test/state").json()
    except (httpx.HTTPError, ValueError):
        console.print(f"[yellow]The test shop at {shop_url} did not answer.[/yellow]")
        return
    discounts = state.get("discounts", [])
    used = [d for d in discounts if d.get("used")]
    unsubscribed = [c for c in state.get("consent", {}).values() if c.get("marketingState") == "UNSUBSCRIBED"]
    console.print(
        f"In the shop ({shop_url}/_test/state): {len(discounts)} discount codes created, each for one "
        f"customer, {len(used)} used at its checkout; {len(state.get('credits', []))} store credits; "
        f"{len(unsubscribed)} customers' email consent withdrawn."
    )
    for discount in discounts[:5]:
        whom = ", ".join(discount.get("customers", []))
        console.print(
            f"  {discount['code']}  {discount['title']}  for {whom}  used: {bool(discount.get('used'))}"
        )


def _ready(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def main(
    customers: Annotated[int, typer.Option(min=1, max=100_000, help="Customers to simulate.")] = 2500,
    days: Annotated[
        float,
        typer.Option(
            min=1,
            max=3650,
            help="Days of history. Over a year, so customers leave the 365-day active window and CRR means "
            "something.",
        ),
    ] = 540,
    seed: Annotated[
        int | None, typer.Option(min=0, max=MAX_SEED, help="Replay this seed (default: a new one each run).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64)] = 8,
    rate: Annotated[float, typer.Option(min=0, help="Calls per second; 0 = as fast as ingest answers.")] = 0,
    timeout: Annotated[
        float, typer.Option(help="Longest wait for the pipeline to settle, in seconds.")
    ] = 180,
    answer: Annotated[
        bool, typer.Option(help="Let some customers answer their emails with an order.")
    ] = True,
    store_id: Annotated[str, typer.Option("--store")] = "demo",
    # The registry keeps only a digest of each store's API key, so the report is given the key itself.
    api_key: Annotated[
        str, typer.Option(envvar="DEMO_API_KEY", help="The store's REST API key (the report reads with it).")
    ] = "demo-api-key",
    stores_file: Annotated[
        Path | None, typer.Option(help="Default: $STORES_FILE or deploy/stores.dev.yaml.")
    ] = None,
    ingest: Annotated[str, typer.Option(envvar="INGEST_URL")] = "http://127.0.0.1:8000",
    segmenter: Annotated[str, typer.Option(envvar="SEGMENTER_URL")] = "http://127.0.0.1:8001",
    notifier: Annotated[str, typer.Option(envvar="NOTIFIER_URL")] = "http://127.0.0.1:8002",
    sink: Annotated[str, typer.Option(envvar="SMTP_SINK_URL")] = "http://127.0.0.1:8025",
) -> None:
    """Replay a simulated store through the public endpoints and print the funnel report."""
    began = time.monotonic()
    registry_file = stores_file or StoresSettings().stores_file
    store = StoreRegistry.load(registry_file).get(store_id)
    if store is None:
        raise typer.BadParameter(f"{registry_file} has no store {store_id!r}", param_hint="--store")
    target = load_target(registry_file, store_id)
    endpoints = Endpoints(*(u.rstrip("/") for u in (ingest, segmenter, notifier, sink)))
    options = SendOptions(ingest_url=endpoints.ingest, concurrency=concurrency, rate=rate)
    config = SimulationConfig(
        seed=seed if seed is not None else int(time.time()) % (MAX_SEED + 1),
        customers=customers,
        days=days,
        end=datetime.now(UTC).replace(microsecond=0),
    )
    with httpx.Client(timeout=15) as client:
        if not _ready(client, endpoints.ingest):
            console.print(
                f"[red]ingest is not ready at {endpoints.ingest}[/red]: start the stack with `make up`."
            )
            raise typer.Exit(1)
        if not store.accepts_api_key(api_key):
            raise typer.BadParameter(f"not the API key of store {store_id!r}", param_hint="--api-key")
        services = Services(client, endpoints, store, api_key)
        before = services.consumed()
        try:
            result = run(config, target, options, console)
        except SendFailed as failure:
            console.print(f"[red]ingest refused a request:[/red] {failure}")
            raise typer.Exit(1) from None
        stats = result.stats
        console.print(
            f"Sent {stats.calls:,} storefront calls ({stats.events:,} events) in {result.seconds:.1f} s "
            f"with seed {config.seed} ({stats.retries} retries)."
        )
        # First the history settles (without waiting for delayed flows), so customers can answer emails.
        target_consumed = before + stats.events if before is not None else None
        wait_until_settled(services, target_consumed, settle_after=0.0, timeout=timeout / 2)
        settle_after = time.monotonic() + _longest_short_delay(store) + 2 * QUIET_SECONDS
        if answer:
            before = services.consumed()
            orders, redeemed = answer_emails(
                services, result.history, target, options, shop_url=test_shop_url(store)
            )
            console.print(
                f"{orders} customers answered their emails with an order ({redeemed} with a coupon)."
            )
            target_consumed = before + orders if before is not None else None
        settled = wait_until_settled(
            services, target_consumed, settle_after=settle_after, timeout=timeout / 2
        )
        if not settled:
            console.print(
                "[yellow]The pipeline was still busy when the wait ended: counts may still move.[/yellow]"
            )
        print_report(services, result.history, store)
    console.print(f"Demo finished in {time.monotonic() - began:.0f} s (seed {config.seed}).")


if __name__ == "__main__":
    typer.run(main)

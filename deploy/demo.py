"""`make demo`: a few customers shop at the demo store through the public Shopify webhook endpoint, then a
report shows each customer's funnel stage and the emails the SMTP sink received.

Each run uses customer and order ids of its own, so running it again shows the whole path working again.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.ingest.sources.shopify import sign
from shared.settings import StoresSettings
from shared.stores import StoreConfig, StoreRegistry

DEMO_STORE = "demo"

console = Console()


@dataclass(frozen=True)
class Shopper:
    first_name: str
    last_name: str
    city: str
    country: str
    orders: int


SHOPPERS = (
    Shopper("Amara", "Okafor", "Lagos", "Nigeria", 1),
    Shopper("Lukas", "Schmidt", "Berlin", "Germany", 2),
    Shopper("Chloé", "Martin", "Lyon", "France", 1),
    Shopper("Hiro", "Tanaka", "Osaka", "Japan", 0),
)

PRODUCTS = (
    (7513594, "Everyday Ceramic Mug", "18.00"),
    (7513601, "Single-Origin Coffee Beans 1kg", "34.50"),
    (7513622, "Pour-Over Starter Kit", "59.00"),
)


def _customer(customer_id: int, shopper: Shopper, email: str, now: datetime) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": email,
        "first_name": shopper.first_name,
        "last_name": shopper.last_name,
        "created_at": now.isoformat(),
        "updated_at": now.isoformat(),
        "state": "enabled",
        "verified_email": True,
        "currency": "USD",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
        "default_address": {"city": shopper.city, "country": shopper.country, "default": True},
    }


def _order(order_id: int, customer: dict[str, Any], product_index: int, at: datetime) -> dict[str, Any]:
    product_id, title, price = PRODUCTS[product_index % len(PRODUCTS)]
    return {
        "id": order_id,
        "email": customer["email"],
        "created_at": at.isoformat(),
        "processed_at": at.isoformat(),
        "currency": "USD",
        "total_price": price,
        "subtotal_price": price,
        "financial_status": "paid",
        "customer_locale": "en",
        "line_items": [
            {
                "id": order_id * 10,
                "product_id": product_id,
                "variant_id": product_id + 1,
                "title": title,
                "quantity": 1,
                "price": price,
                "sku": f"SKU-{product_id}",
            }
        ],
        "customer": customer,
    }


def _demo_store() -> StoreConfig:
    """The demo store as the services know it (STORES_FILE), so its secrets are never copied here."""
    store = StoreRegistry.load(StoresSettings().stores_file).get(DEMO_STORE)
    if store is None or store.shopify is None:
        raise typer.BadParameter(f"the store registry has no {DEMO_STORE!r} store with a Shopify shop")
    return store


def _post(client: httpx.Client, ingest: str, store: StoreConfig, topic: str, payload: dict[str, Any]) -> None:
    assert store.shopify is not None
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": store.shopify.shop_domain,
        "X-Shopify-Hmac-Sha256": sign(store.shopify.webhook_secret.get_secret_value(), body),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-API-Version": "2026-10",
    }
    response = client.post(f"{ingest}/webhooks/shopify", content=body, headers=headers)
    response.raise_for_status()


def main(
    ingest: str = typer.Option(os.environ.get("INGEST_URL", "http://127.0.0.1:8000")),
    segmenter: str = typer.Option(os.environ.get("SEGMENTER_URL", "http://127.0.0.1:8001")),
    notifier: str = typer.Option(os.environ.get("NOTIFIER_URL", "http://127.0.0.1:8002")),
    sink: str = typer.Option(os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:8025")),
    wait_seconds: float = typer.Option(20.0, help="How long to wait for the emails."),
) -> None:
    """Replay a small storefront through the public endpoints and report what happened."""
    store = _demo_store()
    run = int(time.time())
    now = datetime.now(UTC)
    people: list[tuple[str, str, Shopper]] = []
    webhooks = sum(1 + s.orders for s in SHOPPERS)
    with httpx.Client(timeout=10) as client, Progress(console=console) as progress:
        task = progress.add_task("Sending signed Shopify webhooks", total=webhooks)
        for n, shopper in enumerate(SHOPPERS):
            customer_id = run * 100 + n
            email = f"{shopper.first_name.lower()}.{run}@example.com".replace("é", "e")
            customer = _customer(customer_id, shopper, email, now)
            _post(client, ingest, store, "customers/create", customer)
            progress.advance(task)
            for k in range(shopper.orders):
                _post(
                    client,
                    ingest,
                    store,
                    "orders/create",
                    _order(customer_id * 10 + k, customer, n + k, now + timedelta(seconds=k)),
                )
                progress.advance(task)
            people.append((str(customer_id), email, shopper))

    expected = sum(1 for s in SHOPPERS if s.orders >= 1)
    emails = _wait_for_emails(sink, {email for _, email, _ in people}, expected, wait_seconds)
    _report(store, ingest, segmenter, notifier, sink, people, emails)


def _wait_for_emails(
    sink: str, addresses: set[str], expected: int, wait_seconds: float
) -> list[dict[str, Any]] | None:
    """The sink's messages to this run's customers, or None when the notifier uses an outside SMTP server."""
    deadline = time.monotonic() + wait_seconds
    found: list[dict[str, Any]] = []
    with console.status("Waiting for the notifier's emails"):
        while time.monotonic() < deadline:
            try:
                listing = httpx.get(f"{sink}/api/messages", timeout=5).json()
            except httpx.HTTPError:
                return None
            found = [m for m in listing if any(a in " ".join(m.get("to", [])) for a in addresses)]
            if len(found) >= expected:
                break
            time.sleep(0.5)
    return found


def _report(
    store: StoreConfig,
    ingest: str,
    segmenter: str,
    notifier: str,
    sink: str,
    people: list[tuple[str, str, Shopper]],
    emails: list[dict[str, Any]] | None,
) -> None:
    key = store.api_key.get_secret_value()
    auth = {"Authorization": f"Bearer {key}"}
    table = Table(title="Demo store: customers in the loyalty funnel")
    for column in ("customer", "city", "orders", "stage", "health", "emails"):
        table.add_column(column)
    with httpx.Client(timeout=10) as client:
        for customer_id, email, shopper in people:
            profile = client.get(
                f"{segmenter}/v1/stores/{store.store_id}/customers/{customer_id}", headers=auth
            )
            body = profile.json() if profile.status_code == 200 else {}
            subjects = [m["subject"] for m in emails or [] if email in " ".join(m.get("to", []))]
            table.add_row(
                f"{shopper.first_name} {shopper.last_name} ({customer_id})",
                shopper.city,
                str(body.get("orders_count", "-")),
                body.get("stage", "not yet processed"),
                body.get("health", "-"),
                "\n".join(subjects) or "-",
            )
    console.print(table)
    if emails is None:
        console.print("SMTP_HOST/SMTP_PORT point at your own SMTP server: look there for the emails.")
    customer = f"v1/stores/{store.store_id}/customers/{people[0][0]}"
    console.print(
        "\nLook further:\n"
        f"  ingest API docs      {ingest}/docs\n"
        f"  segmenter API docs   {segmenter}/docs   (Bearer {key})\n"
        f"  notifier API docs    {notifier}/docs\n"
        f"  a customer           curl -H 'Authorization: Bearer {key}' {segmenter}/{customer}\n"
        f"  their notifications  curl -H 'Authorization: Bearer {key}' {notifier}/{customer}/notifications\n"
        f"  emails (SMTP sink)   {sink}/\n"
        f"  metrics              {segmenter}/metrics\n"
        "  stop everything      make down"
    )


if __name__ == "__main__":
    typer.run(main)

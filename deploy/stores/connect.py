"""Connecting a store: check its credentials and scopes, register the webhooks the engine uses (once), and
write its registry entry (only when something changed). Platform I/O through the notifier's own clients."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from services.ingest.sources import shopify as shopify_source
from services.ingest.sources import woocommerce as woo_source
from services.notifier.adapters.shopify_admin import ShopifyAdmin
from services.notifier.adapters.woocommerce_rest import WooCommerceRest
from shared.stores import SHOPIFY_API_VERSION, StoreConfig

# What the notifier does in a shop and the scope each needs (shopify.dev/docs/api/usage/access-scopes).
SHOPIFY_SCOPES = {
    "read_orders": "orders and refunds webhooks",
    "read_customers": "customers webhooks, customers found by email",
    "write_customers": "email marketing consent (customerEmailMarketingConsentUpdate)",
    "read_discounts": "look a code up before creating it (codeDiscountNodeByCode)",
    "write_discounts": "create the coupons (discountCodeBasicCreate)",
}
STORE_CREDIT_SCOPES = {
    "read_store_credit_account_transactions": "look a credit up before crediting",
    "write_store_credit_account_transactions": "cashback as store credit (storeCreditAccountCredit)",
}
# Webhook topics registered through the API (GraphQL enum names). The mandatory privacy topics
# (customers/data_request, customers/redact, shop/redact) are not subscribable through the API: Shopify takes
# them from the app's configuration (`[webhooks.privacy_compliance]` in shopify.app.toml).
SHOPIFY_TOPICS = tuple(
    sorted(t.upper().replace("/", "_") for t in shopify_source.HANDLED_TOPICS - shopify_source.PRIVACY_TOPICS)
)
WOO_TOPICS = tuple(sorted(woo_source.HANDLED_TOPICS))


class ConnectError(Exception):
    """Something the person connecting the store must fix; the message says what, never a secret."""


@dataclass
class Report:
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (what, state, detail)

    def add(self, what: str, state: str, detail: str = "") -> None:
        self.lines.append((what, state, detail))


async def connect_shopify(
    http: httpx.AsyncClient,
    *,
    admin_url: str,
    token: str,
    webhook_url: str,
    store_credit: bool,
    report: Report,
) -> None:
    client = ShopifyAdmin(http, url=admin_url, token=token)
    scopes = await client.access_scopes()
    report.add("credentials", "ok", f"admin API {admin_url}")
    needed = SHOPIFY_SCOPES | (STORE_CREDIT_SCOPES if store_credit else {})
    missing = sorted(set(needed) - scopes)
    if missing:
        raise ConnectError(
            "the app's token lacks scopes: " + ", ".join(f"{s} ({needed[s]})" for s in missing)
        )
    report.add("scopes", "ok", ", ".join(sorted(needed)))
    existing = await client.webhook_subscriptions()
    for topic in SHOPIFY_TOPICS:
        if existing.get(topic) == webhook_url:
            report.add(f"webhook {topic}", "unchanged", webhook_url)
            continue
        await client.subscribe(topic, webhook_url)
        report.add(f"webhook {topic}", "registered", webhook_url)
    report.add(
        "privacy webhooks",
        "app config",
        "customers/data_request, customers/redact, shop/redact: set in the app's configuration",
    )


async def connect_woocommerce(
    http: httpx.AsyncClient,
    *,
    rest_url: str,
    key: str,
    secret: str,
    webhook_url: str,
    webhook_secret: str,
    report: Report,
) -> None:
    client = WooCommerceRest(http, rest_url=rest_url, key=key, secret=secret)
    await client.request("GET", "coupons", params={"per_page": "1"})
    report.add("credentials", "ok", f"REST API {rest_url}")
    existing = await client.webhooks()
    for topic in WOO_TOPICS:
        if existing.get(topic) == webhook_url:
            report.add(f"webhook {topic}", "unchanged", webhook_url)
            continue
        # Creating a webhook needs a Read/Write key: a read-only one is refused here (401).
        await client.create_webhook(topic, webhook_url, webhook_secret, f"Loyalty Funnel {topic}")
        report.add(f"webhook {topic}", "registered", webhook_url)


def shopify_entry(
    *,
    shop: str,
    token_env: str | None,
    token_file: Path | None,
    admin_api_url: str | None,
    webhook_secret: str,
    store_credit: bool,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "shop_domain": shop,
        "webhook_secret": webhook_secret,
        "api_version": SHOPIFY_API_VERSION,
    }
    if admin_api_url:
        entry["admin_api_url"] = admin_api_url
    if token_env:
        entry["admin_token_env"] = token_env
    if token_file:
        entry["admin_token_file"] = str(token_file)
    if store_credit:
        entry["store_credit"] = True
    return entry


def write_entry(
    path: Path, store_id: str, platform: str, entry: dict[str, Any], name: str | None
) -> tuple[bool, str | None]:
    """Set stores.<store_id>.<platform> in the registry, validated as the services will. Returns whether it
    changed (running the command again changes nothing) and, for a new store, its new REST API key (the
    registry keeps only its SHA-256; the caller shows it once)."""
    document: dict[str, Any] = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    stores = document.setdefault("stores", {})
    store = stores.get(store_id) or {}
    merged = {**(store.get(platform) or {}), **entry}
    if store.get(platform) == merged:
        return False, None
    updated = {**store, platform: merged}
    updated.setdefault("name", name or store_id)
    new_key = None
    if "api_key" not in updated and "api_key_sha256" not in updated:
        # A new store gets its own REST API key (marketing tools use it as their Bearer key).
        new_key = secrets.token_urlsafe(24)
        updated["api_key_sha256"] = hashlib.sha256(new_key.encode()).hexdigest()
    try:
        StoreConfig.model_validate({"store_id": store_id, **updated})
    except ValueError as exc:
        raise ConnectError(f"the registry entry would be invalid: {exc}") from exc
    stores[store_id] = updated
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return True, new_key

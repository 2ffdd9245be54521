"""`python -m deploy.stores` (or `.venv/bin/stores`): connect a store in one command, check them all.

    stores connect shopify --shop X.myshopify.com --token-env SHOPIFY_TOKEN --webhook-url https://.../webhooks/shopify
    stores connect woocommerce --site https://shop.example/ --key-env WOO_KEY --secret-env WOO_SECRET ...
    stores check

Tokens and keys are read from the environment variables (or files) named; the registry records those names,
never the values, and nothing here prints them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from deploy.stores.connect import (
    SHOPIFY_SCOPES,
    SHOPIFY_TOPICS,
    WOO_TOPICS,
    ConnectError,
    Report,
    connect_shopify,
    connect_woocommerce,
    shopify_entry,
    write_entry,
)
from services.notifier.adapters.shopify_admin import ShopifyAdmin
from services.notifier.adapters.woocommerce_rest import WooCommerceRest
from services.notifier.domain.coupon_platforms import PlatformError
from shared.credentials import CredentialError, read_credential
from shared.settings import REPO_ROOT
from shared.stores import SHOPIFY_API_VERSION, ShopifyConfig, StoreConfig, StoreRegistry, WooCommerceConfig

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
connect = typer.Typer(
    help="Connect a store's platform: check credentials, register webhooks, write the registry."
)
app.add_typer(connect, name="connect")
console = Console()

StoresFile = Annotated[
    Path,
    typer.Option("--stores-file", envvar="STORES_FILE", help="The store registry (YAML) to write."),
]
DEFAULT_STORES = REPO_ROOT / "deploy" / "stores.dev.yaml"


def _secret(env: str | None, file: Path | None, what: str) -> str:
    try:
        found = read_credential(
            env, file, development=os.environ.get("ENVIRONMENT", "development") == "development"
        )
    except CredentialError as exc:
        raise ConnectError(f"{what}: {exc}") from exc
    if found is None:
        raise ConnectError(f"{what}: name an environment variable or a file")
    return found.get_secret_value()


def _run(work: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0)) as http:
            await work(http)

    asyncio.run(go())


def _show(report: Report, title: str) -> None:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    colours = {"ok": "green", "registered": "green", "written": "green", "unchanged": "dim"}
    for what, state, detail in report.lines:
        table.add_row(what, f"[{colours.get(state, 'yellow')}]{state}[/]", detail)
    console.print(table)


def _new_key(store_id: str, key: str | None) -> None:
    if key is not None:
        console.print(
            f"[green]•[/] new store {store_id!r}, its REST API key (shown once; only its hash is kept): {key}"
        )


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]✗[/] {exc}")
    return typer.Exit(1)


@connect.command("shopify")
def connect_shopify_command(
    shop: Annotated[str, typer.Option(help="The shop's myshopify.com domain.")],
    webhook_url: Annotated[str, typer.Option(help="Our ingest's public webhook URL (…/webhooks/shopify).")],
    token_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the Admin API token.")
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the Admin API token.")] = None,
    webhook_secret_env: Annotated[
        str | None, typer.Option(help="Environment variable with the app's client secret (webhook HMAC key).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Store id in the registry (default: the shop's name).")
    ] = None,
    admin_api_url: Annotated[
        str | None,
        typer.Option(help="Admin GraphQL URL (default https://<shop>/admin/api/<version>/graphql.json)."),
    ] = None,
    store_credit: Annotated[bool, typer.Option(help="Cashback as Shopify store credit.")] = False,
    stores_file: StoresFile = DEFAULT_STORES,
) -> None:
    """Connect a Shopify shop: the token and its scopes, the webhooks, the registry entry."""
    domain = shop.strip().lower()
    store_id = store or domain.split(".")[0]
    url = admin_api_url or f"https://{domain}/admin/api/{SHOPIFY_API_VERSION}/graphql.json"
    report = Report()
    try:
        token = _secret(token_env, token_file, "the Admin API token")
        existing = StoreRegistry.load(stores_file).get(store_id) if stores_file.exists() else None
        if webhook_secret_env:
            webhook_secret = _secret(webhook_secret_env, None, "the webhook secret")
        elif existing is not None and existing.shopify is not None:
            webhook_secret = existing.shopify.webhook_secret.get_secret_value()
        else:
            raise ConnectError(
                "a new shop needs --webhook-secret-env (the app's client secret signs its webhooks)"
            )
        ShopifyConfig.model_validate({"shop_domain": domain, "webhook_secret": "x", "admin_api_url": url})
        _run(
            lambda http: connect_shopify(
                http,
                admin_url=url,
                token=token,
                webhook_url=webhook_url,
                store_credit=store_credit,
                report=report,
            )
        )
        entry = shopify_entry(
            shop=domain,
            token_env=token_env,
            token_file=token_file,
            admin_api_url=admin_api_url,
            webhook_secret=webhook_secret,
            store_credit=store_credit,
        )
        written, new_key = write_entry(stores_file, store_id, "shopify", entry, name=None)
    except (ConnectError, PlatformError, ValueError) as exc:
        _show(report, f"Shopify {domain}")
        raise _fail(exc) from exc
    report.add("registry", "written" if written else "unchanged", f"{stores_file} stores.{store_id}.shopify")
    _show(report, f"Shopify {domain}")
    _new_key(store_id, new_key)


@connect.command("woocommerce")
def connect_woocommerce_command(
    site: Annotated[str, typer.Option(help="The site's home URL, e.g. https://shop.example/.")],
    webhook_url: Annotated[
        str, typer.Option(help="Our ingest's public webhook URL (…/webhooks/woocommerce).")
    ],
    key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the consumer key.")
    ] = None,
    secret_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the consumer secret.")
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="File holding the consumer key.")] = None,
    secret_file: Annotated[Path | None, typer.Option(help="File holding the consumer secret.")] = None,
    store: Annotated[
        str | None, typer.Option(help="Store id in the registry (default: the site's host).")
    ] = None,
    api_url: Annotated[str | None, typer.Option(help="REST base (default <site>wp-json/wc/v3/).")] = None,
    consent_meta_key: Annotated[
        str | None, typer.Option(help="The order/customer meta field the site's opt-in checkbox writes.")
    ] = None,
    stores_file: StoresFile = DEFAULT_STORES,
) -> None:
    """Connect a WooCommerce site: the key and secret, the webhooks, the registry entry."""
    home = site.strip()
    if not home.endswith("/"):
        home += "/"
    store_id = store or (httpx.URL(home).host.split(".")[0] if httpx.URL(home).host else "woo")
    report = Report()
    try:
        key = _secret(key_env, key_file, "the consumer key")
        secret = _secret(secret_env, secret_file, "the consumer secret")
        existing = StoreRegistry.load(stores_file).get(store_id) if stores_file.exists() else None
        webhook_secret = (
            existing.woocommerce.webhook_secret.get_secret_value()
            if existing is not None and existing.woocommerce is not None
            else secrets.token_urlsafe(32)
        )
        config = WooCommerceConfig.model_validate(
            {"site_url": home, "webhook_secret": webhook_secret, "api_url": api_url}
        )
        _run(
            lambda http: connect_woocommerce(
                http,
                rest_url=config.rest_url,
                key=key,
                secret=secret,
                webhook_url=webhook_url,
                webhook_secret=webhook_secret,
                report=report,
            )
        )
        entry: dict[str, Any] = {"site_url": home, "webhook_secret": webhook_secret}
        entry |= {"api_url": api_url} if api_url else {}
        entry |= {"consumer_key_env": key_env} if key_env else {"consumer_key_file": str(key_file)}
        entry |= (
            {"consumer_secret_env": secret_env} if secret_env else {"consumer_secret_file": str(secret_file)}
        )
        entry |= {"consent_meta_key": consent_meta_key} if consent_meta_key else {}
        written, new_key = write_entry(stores_file, store_id, "woocommerce", entry, name=None)
    except (ConnectError, PlatformError, ValueError) as exc:
        _show(report, f"WooCommerce {home}")
        raise _fail(exc) from exc
    report.add(
        "registry", "written" if written else "unchanged", f"{stores_file} stores.{store_id}.woocommerce"
    )
    _show(report, f"WooCommerce {home}")
    _new_key(store_id, new_key)


async def _check_store(
    http: httpx.AsyncClient,
    registry: StoreRegistry,
    store: StoreConfig,
    notifier_url: str | None,
    api_key: str | None,
) -> list[tuple[str, str, str, str]]:
    """(platform, credentials, webhooks, last event) for each platform of the store."""
    rows: list[tuple[str, str, str, str]] = []
    credentials = registry.credentials(store.store_id)
    last = await _last_event(http, store, notifier_url, api_key)
    if store.shopify is not None and store.shopify.connected:
        token = credentials.shopify_admin_token
        if token is None:
            rows.append(("shopify", "[red]missing[/] " + "; ".join(credentials.problems), "-", last))
        else:
            client = ShopifyAdmin(http, url=store.shopify.admin_url, token=token.get_secret_value())
            try:
                scopes = await client.access_scopes()
                missing = sorted(set(SHOPIFY_SCOPES) - scopes)
                hooks = await client.webhook_subscriptions()
                absent = [t for t in SHOPIFY_TOPICS if t not in hooks]
                rows.append(
                    (
                        "shopify",
                        "[green]ok[/]" if not missing else f"[yellow]missing scopes[/] {', '.join(missing)}",
                        "[green]all registered[/]"
                        if not absent
                        else f"[yellow]missing[/] {', '.join(absent)}",
                        last,
                    )
                )
            except PlatformError as exc:
                rows.append(("shopify", f"[red]refused[/] {exc.reason}", "-", last))
    if store.woocommerce is not None and store.woocommerce.connected:
        key, secret = credentials.woo_consumer_key, credentials.woo_consumer_secret
        if key is None or secret is None:
            rows.append(("woocommerce", "[red]missing[/] " + "; ".join(credentials.problems), "-", last))
        else:
            woo = WooCommerceRest(
                http,
                rest_url=store.woocommerce.rest_url,
                key=key.get_secret_value(),
                secret=secret.get_secret_value(),
            )
            try:
                hooks = await woo.webhooks()
                absent = [t for t in WOO_TOPICS if t not in hooks]
                rows.append(
                    (
                        "woocommerce",
                        "[green]ok[/]",
                        "[green]all registered[/]"
                        if not absent
                        else f"[yellow]missing[/] {', '.join(absent)}",
                        last,
                    )
                )
            except PlatformError as exc:
                rows.append(("woocommerce", f"[red]refused[/] {exc.reason}", "-", last))
    if not rows:
        hook = "coupon webhook" if store.notifier.coupon_webhook else "not connected: codes are ours only"
        rows.append(("-", hook, "-", last))
    return rows


async def _last_event(
    http: httpx.AsyncClient, store: StoreConfig, notifier_url: str | None, api_key: str | None
) -> str:
    if not notifier_url or not api_key or not store.accepts_api_key(api_key):
        return "-"
    try:
        answer = await http.get(
            f"{notifier_url.rstrip('/')}/v1/stores/{store.store_id}/connection",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        when = answer.json().get("last_event_at") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return "[dim]notifier unreachable[/]"
    return datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "never"


@app.command()
def check(
    stores_file: StoresFile = DEFAULT_STORES,
    notifier_url: Annotated[
        str | None, typer.Option(help="The notifier, for when each store's last event arrived.")
    ] = "http://127.0.0.1:8002",
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable with the store's REST API key (for the last event)."),
    ] = None,
) -> None:
    """Per store: do its credentials work, are its webhooks registered, when did its last event arrive."""
    registry = StoreRegistry.load(stores_file)
    table = Table(title=f"Stores in {stores_file}")
    for column in ("store", "platform", "credentials", "webhooks", "last event"):
        table.add_column(column, overflow="fold")
    found: list[tuple[str, list[tuple[str, str, str, str]]]] = []

    async def work(http: httpx.AsyncClient) -> None:
        for store in registry:
            api_key = os.environ.get(api_key_env) if api_key_env else None
            found.append((store.store_id, await _check_store(http, registry, store, notifier_url, api_key)))

    _run(work)
    for store_id, rows in found:
        for row in rows:
            table.add_row(store_id, *row)
    console.print(table)

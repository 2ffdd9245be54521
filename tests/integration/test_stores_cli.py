"""`stores connect` and `stores check` against the test shop and site (deploy/platforms), over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deploy.platforms import shopify_admin, woocommerce
from deploy.platforms.server import serving
from deploy.stores.cli import app
from deploy.stores.connect import SHOPIFY_TOPICS, WOO_TOPICS

pytestmark = pytest.mark.integration

TOKEN = "shpat_cli_test_token_1234"
KEY, SECRET = "ck_cli_key_5678", "cs_cli_secret_9012"
ENV = {"SHOP_TOKEN": TOKEN, "SHOP_SECRET": "app-client-secret-1", "WOO_KEY": KEY, "WOO_SECRET": SECRET}
HOOK = "https://ingest.example.com/webhooks/shopify"


@pytest.fixture
def shop() -> Iterator[tuple[str, shopify_admin.ShopState]]:
    state = shopify_admin.ShopState(token=TOKEN)
    with serving(shopify_admin.create_app(state)) as url:
        yield f"{url}/admin/api/2025-10/graphql.json", state


@pytest.fixture
def site() -> Iterator[tuple[str, woocommerce.SiteState]]:
    state = woocommerce.SiteState(key=KEY, secret=SECRET)
    with serving(woocommerce.create_app(state)) as url:
        yield f"{url}/wp-json/wc/v3/", state


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=ENV)
    return result.exit_code, result.output


def connect_shop(url: str, registry: Path) -> tuple[int, str]:
    return run(
        "connect", "shopify", "--shop", "cli-test.myshopify.com", "--token-env", "SHOP_TOKEN",
        "--webhook-secret-env", "SHOP_SECRET", "--webhook-url", HOOK, "--admin-api-url", url,
        "--stores-file", str(registry),
    )  # fmt: skip


def test_connect_shopify_registers_webhooks_and_the_entry_once(
    shop: tuple[str, shopify_admin.ShopState], tmp_path: Path
) -> None:
    url, state = shop
    registry = tmp_path / "stores.yaml"
    code, output = connect_shop(url, registry)
    assert code == 0, output
    assert state.webhooks == dict.fromkeys(SHOPIFY_TOPICS, HOOK)
    entry = yaml.safe_load(registry.read_text())["stores"]["cli-test"]
    assert entry["shopify"]["admin_token_env"] == "SHOP_TOKEN"
    assert TOKEN not in registry.read_text()
    assert TOKEN not in output
    assert "api_key_sha256" in entry
    written = registry.read_text()
    # Again: nothing changes, in the shop or in the registry.
    code, output = connect_shop(url, registry)
    assert code == 0, output
    assert "registered" not in output
    assert state.calls.count("webhookSubscriptionCreate") == len(SHOPIFY_TOPICS)
    assert registry.read_text() == written


def test_connect_shopify_names_missing_scopes(
    shop: tuple[str, shopify_admin.ShopState], tmp_path: Path
) -> None:
    url, state = shop
    state.scopes.discard("write_discounts")
    code, output = connect_shop(url, tmp_path / "stores.yaml")
    assert code == 1
    assert "write_discounts" in output
    assert not (tmp_path / "stores.yaml").exists()


def test_connect_shopify_with_a_bad_token_fails_without_showing_it(
    shop: tuple[str, shopify_admin.ShopState], tmp_path: Path
) -> None:
    url, state = shop
    state.token = "shpat_other"
    code, output = connect_shop(url, tmp_path / "stores.yaml")
    assert code == 1
    assert "401" in output
    assert TOKEN not in output


def test_connect_woocommerce_then_check_both(
    shop: tuple[str, shopify_admin.ShopState], site: tuple[str, woocommerce.SiteState], tmp_path: Path
) -> None:
    shop_url, _ = shop
    site_url, state = site
    registry = tmp_path / "stores.yaml"
    args = (
        "connect", "woocommerce", "--site", "https://woo-cli.example.com", "--key-env", "WOO_KEY",
        "--secret-env", "WOO_SECRET", "--webhook-url", "https://ingest.example.com/webhooks/woocommerce",
        "--api-url", site_url, "--consent-meta-key", "_newsletter_opt_in", "--stores-file", str(registry),
    )  # fmt: skip
    code, output = run(*args)
    assert code == 0, output
    assert sorted(w["topic"] for w in state.webhooks) == sorted(WOO_TOPICS)
    code, output = run(*args)
    assert code == 0, output
    assert len(state.webhooks) == len(WOO_TOPICS)
    entry = yaml.safe_load(registry.read_text())["stores"]["woo-cli"]["woocommerce"]
    assert entry["consumer_key_env"] == "WOO_KEY"
    assert entry["consent_meta_key"] == "_newsletter_opt_in"
    assert KEY not in registry.read_text()
    assert connect_shop(shop_url, registry)[0] == 0

    code, output = run("check", "--stores-file", str(registry), "--notifier-url", "")
    assert code == 0, output
    assert output.count("all registered") == 2
    # A revoked key shows as refused, with the platform's reason.
    state.secret = "cs_rotated"
    code, output = run("check", "--stores-file", str(registry), "--notifier-url", "")
    assert "refused" in output
    assert "401" in output

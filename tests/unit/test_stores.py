from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.funnel_rules import FunnelRules
from shared.settings import REPO_ROOT
from shared.stores import StoreRegistry, StoreRegistryError

DEV = REPO_ROOT / "deploy" / "stores.dev.yaml"


def test_development_registry_defines_the_demo_store_as_designed() -> None:
    registry = StoreRegistry.load(DEV)
    demo = registry.get("demo")
    assert demo is not None
    assert registry.by_shop_domain("Demo.MyShopify.com ") is demo
    assert demo.shopify is not None
    assert demo.shopify.webhook_secret.get_secret_value() == "demo-shopify-secret"
    assert demo.woocommerce is not None
    assert demo.woocommerce.site_url == "https://demo-woo.example.com/"
    assert demo.segment is not None
    assert demo.segment.write_key.get_secret_value() == "demo-write-key"
    assert demo.accepts_api_key("demo-api-key")
    assert not demo.accepts_api_key("demo-api-key ")
    assert demo.timezone == "UTC"
    assert demo.funnel.cart_abandonment == timedelta(seconds=20)


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(StoreRegistryError, match="placeholder"):
        StoreRegistry.load(DEV, allow_placeholder_secrets=False)


def test_invalid_registry_names_the_store_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "stores.yaml"
    bad.write_text("stores:\n  shop1:\n    name: Shop\n    api_key: k\n    currency: dollars\n")
    with pytest.raises(StoreRegistryError, match=r"shop1.*currency"):
        StoreRegistry.load(bad)


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreRegistryError, match="cannot read"):
        StoreRegistry.load(tmp_path / "nope.yaml")


def test_production_defaults_live_in_code() -> None:
    assert FunnelRules().cart_abandonment == timedelta(hours=1)

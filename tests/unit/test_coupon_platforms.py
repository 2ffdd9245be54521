"""Where coupons live and what a platform's failure means for the message (pure rules), and how the registry
names platform credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.notifier.domain.coupon_platforms import (
    CouponPlatform,
    Delivery,
    PlatformRefused,
    PlatformUnavailable,
    Retry,
    Unavailable,
    after_failure,
    placement,
    safe_reason,
)
from shared.credentials import CredentialError, read_credential
from shared.notifier_rules import CouponKind
from shared.stores import StoreConfig, StoreRegistry, StoreRegistryError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def store(**parts: object) -> StoreConfig:
    return StoreConfig.model_validate({"store_id": "s", "name": "S", "api_key": "k-123", **parts})


SHOP = {"shop_domain": "s.myshopify.com", "webhook_secret": "w", "admin_token_env": "S_TOKEN"}
SITE = {"site_url": "https://s.example/", "webhook_secret": "w", "consumer_key_env": "S_KEY"}


def test_shopify_first_then_woocommerce_then_webhook_else_ours() -> None:
    assert (
        placement(store(shopify=SHOP, woocommerce=SITE), CouponKind.PERCENT).platform
        == CouponPlatform.SHOPIFY
    )
    assert placement(store(woocommerce=SITE), CouponKind.PERCENT).platform == CouponPlatform.WOOCOMMERCE
    hook = {"coupon_webhook": {"url": "https://s.example/coupons", "secret": "x"}}
    assert placement(store(notifier=hook), CouponKind.FIXED).platform == CouponPlatform.WEBHOOK
    # A Shopify store without an Admin API token is not connected: codes stay ours.
    unconnected = {"shop_domain": "s.myshopify.com", "webhook_secret": "w"}
    assert placement(store(shopify=unconnected), CouponKind.PERCENT).platform == CouponPlatform.OURS


def test_cashback_is_store_credit_only_where_the_store_enables_it() -> None:
    credit = store(shopify=SHOP | {"store_credit": True})
    assert placement(credit, CouponKind.CASHBACK).delivery == Delivery.STORE_CREDIT
    assert placement(credit, CouponKind.PERCENT).delivery == Delivery.CODE
    assert placement(store(shopify=SHOP), CouponKind.CASHBACK).delivery == Delivery.CODE


def test_unavailable_platform_defers_with_exponential_backoff() -> None:
    delays = []
    for attempts in range(1, 9):
        verdict = after_failure(
            PlatformUnavailable("503"), attempts=attempts, now=NOW, send_before=NOW + timedelta(days=2)
        )
        assert isinstance(verdict, Retry)
        delays.append(verdict.due_at - NOW)
    assert delays[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)]
    assert delays[-1] == timedelta(minutes=30)  # capped


def test_retry_after_is_honoured_and_expiry_ends_the_wait() -> None:
    slow = PlatformUnavailable("429", retry_after=timedelta(minutes=5))
    verdict = after_failure(slow, attempts=1, now=NOW, send_before=None)
    assert isinstance(verdict, Retry)
    assert verdict.due_at == NOW + timedelta(minutes=5)
    late = after_failure(
        PlatformUnavailable("503"), attempts=1, now=NOW, send_before=NOW + timedelta(seconds=5)
    )
    assert isinstance(late, Unavailable)
    assert "expired" in late.reason


def test_refusal_is_unavailable_at_once() -> None:
    verdict = after_failure(PlatformRefused("shopify: 401"), attempts=1, now=NOW, send_before=None)
    assert verdict == Unavailable("shopify: 401")


def test_reasons_never_carry_tokens() -> None:
    assert "shpat_abc" not in safe_reason("bad token shpat_abc123 for ck_live_99")
    assert safe_reason("a  b\n c") == "a b c"


def test_credentials_from_env_or_file_and_the_demo_default_in_development_only(tmp_path: Path) -> None:
    assert read_credential("X_TOKEN", None, development=False, environ={"X_TOKEN": " t1 "}) is not None
    secret = read_credential("DEMO_SHOPIFY_ADMIN_TOKEN", None, development=True, environ={})
    assert secret is not None
    assert secret.get_secret_value() == "demo-admin-token"
    with pytest.raises(CredentialError, match="DEMO_SHOPIFY_ADMIN_TOKEN is not set"):
        read_credential("DEMO_SHOPIFY_ADMIN_TOKEN", None, development=False, environ={})
    path = tmp_path / "token"
    path.write_text("from-file\n")
    from_file = read_credential(None, path, development=False, environ={})
    assert from_file is not None
    assert from_file.get_secret_value() == "from-file"
    with pytest.raises(CredentialError, match="cannot read"):
        read_credential(None, tmp_path / "missing", development=False, environ={})


def test_platform_urls_are_https_except_on_loopback() -> None:
    local = store(shopify=SHOP | {"admin_api_url": "http://127.0.0.1:9/admin/api/2025-10/graphql.json"})
    assert local.shopify is not None
    assert local.shopify.admin_url.startswith("http://127.0.0.1")
    assert store(shopify=SHOP).shopify.admin_url == (  # type: ignore[union-attr]
        "https://s.myshopify.com/admin/api/2025-10/graphql.json"
    )
    with pytest.raises(ValueError, match="https"):
        store(shopify=SHOP | {"admin_api_url": "http://shop.example.com/graphql.json"})
    with pytest.raises(ValueError, match="https"):
        store(woocommerce=SITE | {"api_url": "http://10.0.0.5/wp-json/wc/v3/"})
    # A connected site's key would travel to <site_url>wp-json/wc/v3/: plain http is refused there too.
    with pytest.raises(ValueError, match="https"):
        store(woocommerce=SITE | {"site_url": "http://shop.example.com/"})
    assert store(woocommerce=SITE).woocommerce.rest_url == "https://s.example/wp-json/wc/v3/"  # type: ignore[union-attr]


def test_production_refuses_the_demo_credentials(tmp_path: Path) -> None:
    registry = tmp_path / "stores.yaml"
    registry.write_text(
        # Secrets as long and random as production demands (shared/registry_checks.py).
        "stores:\n  s:\n    name: S\n    api_key: Zq7vN2xK9pL4mR8tW1yB6cD3fH5jG0sA\n    shopify:\n"
        "      shop_domain: s.myshopify.com\n"
        "      webhook_secret: 9f8e7d6c5b4a39281706f5e4d3c2b1a0\n"
        "      admin_token_file: " + str(tmp_path / "t") + "\n"
    )
    (tmp_path / "t").write_text("demo-admin-token")
    with pytest.raises(StoreRegistryError, match="placeholder"):
        StoreRegistry.load(registry, allow_placeholder_secrets=False)
    (tmp_path / "t").write_text("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")
    loaded = StoreRegistry.load(registry, allow_placeholder_secrets=False)
    token = loaded.credentials("s").shopify_admin_token
    assert token is not None
    assert token.get_secret_value() == "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"
    assert "shpat_live_value" not in repr(loaded.credentials("s"))

"""The registry a production deploy refuses, every problem listed; the development registry still loads."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.segmenter.settings import SegmenterSettings
from shared.registry_checks import entropy_bits
from shared.settings import DEV_SERVICE_API_KEY, REPO_ROOT
from shared.stores import StoreRegistry, StoreRegistryError

DEV = REPO_ROOT / "deploy" / "stores.dev.yaml"


def _strong() -> str:
    return secrets.token_urlsafe(32)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stores.yaml"
    path.write_text(text)
    return path


def test_a_registry_open_to_attack_fails_with_every_problem_listed(tmp_path: Path) -> None:
    shared_key, shared_write_key = _strong(), _strong()
    registry = _write(
        tmp_path,
        f"""
stores:
  alpha:
    name: Alpha
    api_key: "x"
    shopify: {{shop_domain: same.myshopify.com, webhook_secret: "s3cret"}}
    woocommerce: {{site_url: "https://shop.example.org/", webhook_secret: "{_strong()}"}}
    segment: {{write_key: "{shared_write_key}"}}
    notifier: {{site_url: "http://alpha.example.org"}}
  beta:
    name: Beta
    api_key: "{shared_key}"
    shopify: {{shop_domain: SAME.myshopify.com, webhook_secret: "{_strong()}"}}
    woocommerce: {{site_url: "https://SHOP.example.org", webhook_secret: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}
    segment: {{write_key: "{shared_write_key}"}}
    notifier: {{site_url: "https://beta.example.org"}}
  gamma:
    name: Gamma
    api_key: "{shared_key}"
    notifier:
      site_url: "http://127.0.0.1:9000"
      support_webhook: {{url: "http://127.0.0.1:9", secret: "{_strong()}"}}
""",
    )
    with pytest.raises(StoreRegistryError) as info:
        StoreRegistry.load(registry, production=True)
    message = str(info.value)
    expected = [
        "store 'alpha': api_key: shorter than 24 characters",
        "store 'alpha': shopify.webhook_secret: shorter than 24 characters",
        "store 'alpha': notifier.site_url: must be an https URL",
        "store 'beta': woocommerce.webhook_secret: too predictable",
        "store 'gamma': notifier.site_url: must be an https URL",
        "store 'gamma': notifier.support_webhook.url: must be an https URL",
        "stores 'beta', 'gamma' share the same API key",
        "stores 'alpha', 'beta' share the same Shopify shop domain",
        "stores 'alpha', 'beta' share the same WooCommerce site",
        "stores 'alpha', 'beta' share the same Segment write key",
    ]
    for problem in expected:
        assert problem in message
    assert f"{len(expected)} problem(s)" in message
    # Secrets are never echoed in the error.
    assert shared_key not in message
    assert shared_write_key not in message


def test_duplicates_are_refused_in_development_too(tmp_path: Path) -> None:
    registry = _write(
        tmp_path,
        """
stores:
  one: {name: One, api_key: k1, segment: {write_key: same}}
  two: {name: Two, api_key: k2, segment: {write_key: same}}
""",
    )
    with pytest.raises(StoreRegistryError, match="share the same Segment write key"):
        StoreRegistry.load(registry)


def test_loopback_http_is_for_development_only(tmp_path: Path) -> None:
    text = (
        "stores:\n  one:\n    name: One\n    api_key: k1\n    notifier: {site_url: 'http://127.0.0.1:8080'}\n"
    )
    assert StoreRegistry.load(_write(tmp_path, text)).get("one") is not None
    with pytest.raises(StoreRegistryError, match="site_url: must be an https URL"):
        StoreRegistry.load(_write(tmp_path, text), production=True)
    with pytest.raises(StoreRegistryError, match="https"):
        StoreRegistry.load(_write(tmp_path, text.replace("127.0.0.1", "shop.example.org")))


def test_a_production_registry_keeps_only_the_api_keys_digest(tmp_path: Path) -> None:
    key = _strong()
    digest = hashlib.sha256(key.encode()).hexdigest()
    registry = _write(
        tmp_path,
        f"""
stores:
  hashed: {{name: Hashed, api_key_sha256: "{digest}", notifier: {{site_url: "https://a.example.org"}}}}
  plain: {{name: Plain, api_key: "{_strong()}", notifier: {{site_url: "https://b.example.org"}}}}
""",
    )
    loaded = StoreRegistry.load(registry, production=True)
    hashed = loaded.get("hashed")
    assert hashed is not None
    assert hashed.accepts_api_key(key)
    assert not hashed.accepts_api_key(key[:-1])
    assert not hashed.accepts_api_key(digest)  # the digest itself is not a key
    plain = loaded.get("plain")
    assert plain is not None
    assert "api_key" not in plain.model_dump()
    assert "api_key_facts" not in plain.model_dump()


def test_both_forms_of_the_api_key_at_once_are_refused(tmp_path: Path) -> None:
    text = f"stores:\n  one: {{name: One, api_key: k, api_key_sha256: '{'0' * 64}'}}\n"
    with pytest.raises(StoreRegistryError, match="not both"):
        StoreRegistry.load(_write(tmp_path, text))


def test_the_development_registry_loads_outside_production_and_is_refused_in_it() -> None:
    assert StoreRegistry.load(DEV).get("demo") is not None
    with pytest.raises(StoreRegistryError) as info:
        StoreRegistry.load(DEV, production=True)
    assert "placeholder" in str(info.value)


def test_entropy_estimate_orders_secrets_sensibly() -> None:
    assert entropy_bits("a" * 40) == 0
    assert entropy_bits("0123456789abcdef" * 2) == pytest.approx(128)
    assert entropy_bits(secrets.token_hex(32)) > 200


def test_an_empty_signing_secret_is_refused_in_every_environment(tmp_path: Path) -> None:
    text = "stores:\n  one: {name: One, api_key: k, shopify: {shop_domain: a.io, webhook_secret: ''}}\n"
    with pytest.raises(StoreRegistryError, match=r"shopify\.webhook_secret"):
        StoreRegistry.load(_write(tmp_path, text))


def test_a_weak_service_key_stops_a_production_service() -> None:
    with pytest.raises(ValidationError, match="SERVICE_API_KEY"):
        SegmenterSettings(environment="production", service_api_key=SecretStr("short"))
    strong = _strong()
    configured = SegmenterSettings(environment="production", service_api_key=SecretStr(strong))
    assert configured.effective_service_api_key() == strong
    assert SegmenterSettings(environment="production").effective_service_api_key() is None
    assert SegmenterSettings(environment="test").effective_service_api_key() == DEV_SERVICE_API_KEY

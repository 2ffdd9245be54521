"""The chaos stack's copy of the development registry: its own test shop and site, the same templates."""

from __future__ import annotations

from pathlib import Path

from deploy.chaos.run import DEV_REGISTRY, chaos_registry
from shared.stores import StoreRegistry


def test_the_copy_points_the_demo_store_at_this_stacks_shop_and_site(tmp_path: Path) -> None:
    copy = StoreRegistry.load(chaos_registry(tmp_path / "stores.yaml", 41001, 41002))
    demo = copy.get("demo")
    assert demo is not None
    assert demo.shopify is not None
    assert demo.woocommerce is not None
    assert demo.shopify.admin_api_url == "http://127.0.0.1:41001/admin/api/2025-10/graphql.json"
    assert demo.woocommerce.api_url == "http://127.0.0.1:41002/wp-json/wc/v3/"


def test_the_copy_finds_the_same_templates_though_it_lives_elsewhere(tmp_path: Path) -> None:
    original = StoreRegistry.load(DEV_REGISTRY).get("demo")
    demo = StoreRegistry.load(chaos_registry(tmp_path / "stores.yaml", 41001, 41002)).get("demo")
    assert original is not None
    assert demo is not None
    assert demo.templates_dir is not None
    assert demo.templates_dir.is_dir()
    assert demo.templates_dir.resolve() == (original.templates_dir or Path("/nonexistent")).resolve()
    assert demo.name == original.name

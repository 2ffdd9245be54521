from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.funnel_rules import FunnelRules
from shared.origins import AllowedOrigin, OriginSet
from shared.settings import REPO_ROOT
from shared.stores import StoreConfig, StoreRegistry, StoreRegistryError, WriteKeyKind

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


def test_demo_store_has_a_public_browser_key_and_local_origins() -> None:
    registry = StoreRegistry.load(DEV)
    demo = registry.get("demo")
    assert demo is not None
    assert registry.resolve_write_key("demo-browser-key") == (demo, WriteKeyKind.BROWSER)
    assert registry.resolve_write_key("demo-write-key") == (demo, WriteKeyKind.SERVER)
    assert demo.allows_origin("http://127.0.0.1:41234")
    assert demo.allows_origin("http://localhost:3000")
    assert not demo.allows_origin("https://127.0.0.1:41234")  # another scheme is another origin
    assert not demo.allows_origin("http://127.0.0.1.evil.example:80")
    assert not demo.allows_origin("null")  # sandboxed iframes and file:// pages


@pytest.mark.parametrize(
    ("allowed", "origin", "matches"),
    [
        ("https://shop.example.com", "https://shop.example.com", True),
        ("https://shop.example.com", "https://shop.example.com:443", True),
        ("https://shop.example.com", "https://shop.example.com:8443", False),
        ("https://*.example.com", "https://www.example.com", True),
        ("https://*.example.com", "https://a.b.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://.example.com", False),
        ("https://*.example.com", "https://evilexample.com", False),
        ("http://127.0.0.1:*", "http://127.0.0.1:9", True),
        ("HTTPS://Shop.Example.com/", "https://shop.example.com", True),
    ],
)
def test_allowed_origin_patterns(allowed: str, origin: str, matches: bool) -> None:
    assert OriginSet.of([AllowedOrigin.parse(allowed)]).allows(origin) is matches


def one_entry_allows(entry: AllowedOrigin, origin: str) -> bool:
    """The rule of one entry as the README states it, entry by entry (what the index must agree with)."""
    parts = urlsplit(origin.lower())
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    port = parts.netloc[len(host) + 1 :] or {"http": "80", "https": "443"}.get(parts.scheme, "")
    if parts.scheme != entry.scheme or entry.port not in ("*", port) or not host or "*" in host:
        return False
    if entry.host.startswith("*."):
        return host.endswith(entry.host[1:]) and len(host) > len(entry.host) - 1
    return host == entry.host


LABELS = st.sampled_from(["shop", "example", "com", "a", "b", "www", "127", "0", "1"])
HOSTS = st.lists(LABELS, min_size=1, max_size=4).map(".".join) | st.just("[::1]")
PORTS = st.sampled_from(["", ":80", ":443", ":8080"])
ORIGINS = st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(["http", "https"]), HOSTS, PORTS)
ENTRIES = st.builds(
    lambda s, wild, h, p: f"{s}://{'*.' if wild else ''}{h}{p}",
    st.sampled_from(["http", "https"]),
    st.booleans(),
    HOSTS.filter(lambda h: not h.startswith("[")),
    PORTS | st.just(":*"),
)


@given(entries=st.lists(ENTRIES, max_size=6), origin=ORIGINS)
def test_the_index_allows_what_some_entry_allows(entries: list[str], origin: str) -> None:
    parsed = [AllowedOrigin.parse(entry) for entry in entries]
    expected = any(one_entry_allows(entry, origin) for entry in parsed)
    assert OriginSet.of(parsed).allows(origin) is expected


def test_any_stores_origin_is_found_in_a_large_registry() -> None:
    # 2,000 entries: past the 1,024 parsed entries the look-up entry by entry used to keep.
    stores = [
        StoreConfig.model_validate(
            {
                "store_id": f"s{n}",
                "name": "Shop",
                "api_key": f"key-{n}",
                "allowed_origins": [f"https://shop{n}.example.com", f"https://*.shop{n}.example.net:*"],
            }
        )
        for n in range(1000)
    ]
    registry = StoreRegistry(stores)
    assert registry.allows_origin_anywhere("https://shop999.example.com")
    assert registry.allows_origin_anywhere("https://www.shop0.example.net:8443")
    assert not registry.allows_origin_anywhere("https://shop1000.example.com")
    assert not registry.allows_origin_anywhere("https://shop9.example.net")  # the bare domain
    assert stores[5].allows_origin("https://a.b.shop5.example.net")
    assert not stores[5].allows_origin("https://shop6.example.com")


def test_an_origin_with_a_path_is_refused_naming_the_store(tmp_path: Path) -> None:
    bad = tmp_path / "stores.yaml"
    bad.write_text(
        "stores:\n  shop1:\n    name: Shop\n    api_key: k\n    allowed_origins: ['https://shop.example/cart']\n"
    )
    with pytest.raises(StoreRegistryError, match=r"shop1.*allowed_origins"):
        StoreRegistry.load(bad)


def test_a_write_key_used_twice_is_refused(tmp_path: Path) -> None:
    twice = tmp_path / "stores.yaml"
    twice.write_text(
        "stores:\n"
        "  a:\n    name: A\n    api_key: ka\n"
        "    segment: {write_key: same-key-123, browser_write_key: pub-a-123}\n"
        "  b:\n    name: B\n    api_key: kb\n"
        "    segment: {write_key: other-key-1, browser_write_key: same-key-123}\n"
    )
    with pytest.raises(StoreRegistryError, match=r"stores .a., .b. share the same Segment write key"):
        StoreRegistry.load(twice)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("funnel:\n      cart_abandonment: P36501D", "cart_abandonment"),
        ("funnel:\n      health:\n        at_risk_after: 0", "at_risk_after"),
        ("funnel:\n      active_window: -P1D", "active_window"),
        ("notifier:\n      attribution_window: P100000D", "attribution_window"),
        ("notifier:\n      flows:\n        welcome:\n          delay: P36501D", "delay"),
        (
            "audiences:\n      definitions:\n        late:\n          ordered_within: P36501D",
            "ordered_within",
        ),
    ],
)
def test_a_rule_duration_beyond_a_century_or_below_nothing_is_refused_naming_it(
    tmp_path: Path, section: str, field: str
) -> None:
    """A century at most: the dates the services derive with a store's durations (a cart's abandonment, a
    coupon's end, a window back) must stay within what a datetime holds, and a health at-risk delay of
    nothing would be divided by."""
    bad = tmp_path / "stores.yaml"
    bad.write_text(f"stores:\n  shop1:\n    name: Shop\n    api_key: k\n    {section}\n")
    with pytest.raises(StoreRegistryError, match=rf"shop1.*{field}"):
        StoreRegistry.load(bad)


def test_a_rule_duration_of_a_century_is_taken(tmp_path: Path) -> None:
    good = tmp_path / "stores.yaml"
    good.write_text(
        "stores:\n  shop1:\n    name: Shop\n    api_key: k\n    funnel:\n      active_window: P36500D\n"
    )
    store = StoreRegistry.load(good).get("shop1")
    assert store is not None
    assert store.funnel.active_window == timedelta(days=36_500)

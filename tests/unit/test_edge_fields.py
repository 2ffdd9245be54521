"""Values that become a header, an address or a path are refused at ingest's edge, naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.ingest.sources import segment, shopify
from services.notifier.domain.personalisation import product_url, safe_link
from shared.events import Customer
from shared.fields import email_address, language_tag, url_segment

NOW = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)

HEADER_INJECTIONS = [
    "victim@example.com\r\nBcc: everyone@example.net",
    "victim@example.com\nSubject: hi",
    "two words@example.com",
    "victim@example.com, other@example.net",
    "Victim <victim@example.com>",
    "nul\x00@example.com",
    "tab\t@example.com",
    "no-at-sign.example.com",
    "no-domain@",
    "no-dot@localhost",
    "a@b@example.com",
]


@pytest.mark.parametrize("bad", HEADER_INJECTIONS)
def test_anything_but_one_plain_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an email address"):
        email_address(bad)
    with pytest.raises(ValidationError) as info:
        Customer(email=bad)
    assert info.value.errors()[0]["loc"] == ("email",)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("  Camille@Example.COM ", "camille@example.com"),
        ("o'brien+tag@sub.example.co.uk", "o'brien+tag@sub.example.co.uk"),
        ("maría@correo.example.es", "maría@correo.example.es"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
    ],
)
def test_real_addresses_pass_trimmed_and_lower_cased(raw: str, kept: str) -> None:
    assert email_address(raw) == kept


@pytest.mark.parametrize(
    ("raw", "kept"), [("en", "en"), ("pt-BR", "pt-BR"), ("en_US", "en-US"), ("zh-Hant-TW", "zh-Hant-TW")]
)
def test_language_tags_pass(raw: str, kept: str) -> None:
    assert language_tag(raw) == kept


@pytest.mark.parametrize("bad", ["../../etc", "en\r\nX: y", "en US", "en-", "e", "de/../en"])
def test_a_locale_that_is_not_a_language_tag_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="BCP 47"):
        language_tag(bad)


def test_ids_in_url_paths_are_escaped_slash_included() -> None:
    assert url_segment("email:a b/../c?x=1#f") == "email%3Aa%20b%2F..%2Fc%3Fx%3D1%23f"


def _segment_errors(body: dict[str, Any]) -> list[str]:
    with pytest.raises(segment.SegmentError) as info:
        segment.to_canonical("identify", body, store_id="demo", received_at=NOW)
    return [field for field, _ in info.value.errors]


def test_a_segment_identify_with_crlf_in_the_email_names_traits_email() -> None:
    crlf = "victim@example.com\r\nBcc: all@example.net"
    body = {"messageId": "m1", "userId": "u1", "traits": {"email": crlf}}
    assert _segment_errors(body) == ["traits.email"]


def test_a_segment_call_with_a_path_in_the_locale_names_context_locale() -> None:
    body = {"messageId": "m1", "userId": "u1", "context": {"locale": "../../../etc/passwd"}}
    assert _segment_errors(body) == ["context.locale"]


def test_a_shopify_customer_with_a_header_in_the_email_is_kept_without_it() -> None:
    # Signed by Shopify, so a 422 would only be retried and count against the subscription
    # (services/ingest/sources/fitting.py): the customer is kept, known by their id, and the email never
    # reaches a header.
    payload = {"id": 7, "email": "x@example.com\r\nBcc: y@example.net", "created_at": "2026-11-20T10:00:00Z"}
    event = shopify.to_canonical("customers/create", payload, store_id="demo", received_at=NOW, event_id="e1")
    assert event is not None
    assert (event.customer.store_customer_id, event.customer.email) == ("7", None)


def test_a_shopify_pos_order_without_email_is_still_accepted() -> None:
    customer = shopify.ShopifyCustomer.model_validate({"id": 1, "email": "", "locale": ""})
    assert customer.email is None
    assert customer.locale is None


HOSTS = frozenset({"demo-store.example", "demo.myshopify.com", "*.cdn.example"})


@pytest.mark.parametrize(
    "url",
    [
        "https://demo-store.example/cart/1",
        "https://demo.myshopify.com/1/checkouts/a/recover?key=k",
        "https://img.cdn.example/p.png",
        "https://DEMO-STORE.example./cart",
    ],
)
def test_links_to_the_stores_own_hosts_are_kept(url: str) -> None:
    assert safe_link(url, HOSTS) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/cart",
        "http://demo-store.example/cart",
        "https://demo-store.example@evil.example/",
        "https://demo-store.example.evil.example/",
        "https://cdn.example/p.png",  # *.cdn.example is subdomains only
        "https://demo-store.example:8443/cart",
        "javascript:alert(1)",
        "https://demo-store.example/cart\r\nBcc: x@example.com",
        "//demo-store.example/cart",
        None,
        42,
    ],
)
def test_any_other_link_is_dropped(url: object) -> None:
    assert safe_link(url, HOSTS) is None


def test_product_ids_are_escaped_in_product_links() -> None:
    assert (
        product_url("https://s.example/", "../admin?x=1") == "https://s.example/products/..%2Fadmin%3Fx%3D1"
    )

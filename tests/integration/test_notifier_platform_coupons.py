"""Coupons that take effect where the store lives: the real sender, real Postgres and SMTP, and test servers
that answer as Shopify's Admin GraphQL API and WooCommerce's REST API document (deploy/platforms/)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.platforms import shopify_admin, woocommerce
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.adapters.tables import store_connections
from services.notifier.adapters.webhooks import signature
from services.notifier.domain.coupon_platforms import (
    PROVISIONING_LEASE,
    CouponOrder,
    CouponPlatform,
    Delivery,
)
from shared.notifier_rules import CouponKind
from shared.stores import StoreConfig, StoreRegistry
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.conftest import PLATFORM_KEY, PLATFORM_SECRET, PLATFORM_TOKEN
from tests.integration.notifier_harness import Clock, Notifier, dev_store, webhook_receiver

pytestmark = pytest.mark.integration

TOKEN, KEY, SECRET = PLATFORM_TOKEN, PLATFORM_KEY, PLATFORM_SECRET
CART = {
    "cart_id": "k-1",
    "items": [{"product_id": "p-kit", "title": "Pour-Over Kit", "quantity": 1, "price": "59.90"}],
    "total": "59.90",
    "currency": "EUR",
    "recovery_url": "https://demo-store.example/cart/k-1",
    "source": "timer",
}
ORDER = {
    "order_id": "o-1",
    "total": "60.00",
    "currency": "EUR",
    "items": [{"product_id": "p-kit", "title": "Pour-Over Kit", "quantity": 1, "price": "60.00"}],
}


def _now() -> datetime:
    # The test shop checks dates against its own clock, as Shopify would: the notifier's clock starts now.
    return datetime.now(UTC).replace(microsecond=0)


def _secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


def connected_store(
    store_id: str,
    tmp_path: Path,
    *,
    shop_url: str | None = None,
    site_url: str | None = None,
    token: str = TOKEN,
    notifier_rules: dict[str, Any] | None = None,
    coupon_webhook: dict[str, str] | None = None,
    **shopify_options: Any,
) -> StoreConfig:
    rules = dict(notifier_rules or {})
    if coupon_webhook is not None:
        rules["coupon_webhook"] = coupon_webhook
    data = dev_store(store_id, **rules).model_dump()
    data["shopify"] = (
        {
            "shop_domain": f"{store_id}.myshopify.com",
            "webhook_secret": "test-shopify-secret",
            "admin_api_url": f"{shop_url}/admin/api/2025-10/graphql.json",
            "admin_token_file": _secret_file(tmp_path, "shopify-token", token),
            **shopify_options,
        }
        if shop_url
        else None
    )
    data["woocommerce"] = (
        {
            "site_url": f"https://{store_id}.example.com/",
            "webhook_secret": "test-woo-secret",
            "api_url": f"{site_url}/wp-json/wc/v3/",
            "consumer_key_file": _secret_file(tmp_path, "woo-key", KEY),
            "consumer_secret_file": _secret_file(tmp_path, "woo-secret", SECRET),
        }
        if site_url
        else None
    )
    return StoreConfig.model_validate(data)


@pytest.fixture
async def harness(engine: AsyncEngine, smtp_server: SmtpServer) -> AsyncIterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for n in made:
        await n.http.aclose()


def notifier(made: list[Notifier], engine: AsyncEngine, smtp: SmtpServer, store: StoreConfig) -> Notifier:
    n = Notifier(engine, store, Clock(_now()), smtp.host, smtp.port, platforms=True)
    made.append(n)
    return n


def mails_to(smtp_server: SmtpServer, customer_id: str) -> list[Any]:
    return [m for m in smtp_server.messages if m["To"] == f"{customer_id}@example.com"]


async def mails_for(smtp_server: SmtpServer, customer_id: str, count: int = 1) -> list[Any]:
    """The customer's mails once `count` arrived (the SMTP server records them on its own thread)."""
    for _ in range(200):
        found = mails_to(smtp_server, customer_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"expected {count} mail(s) to {customer_id}")


def text_of(mail: Any) -> str:
    return str(mail.get_body(("plain",)).get_content())


async def abandon(n: Notifier, customer_id: str) -> None:
    payload = dict(CART, last_activity_at=(n.clock.now - timedelta(hours=1)).isoformat())
    await n.plan([funnel_event("cart_abandoned", n.store.store_id, customer_id, n.clock.now, payload)])


async def _made_then_asked_again(n: Notifier, customer_id: str) -> tuple[Any, PlatformClients, CouponOrder]:
    """A coupon the sender made for an abandoned cart, the platform clients, and the coupon's order as a
    later try of it would ask for it."""
    await abandon(n, customer_id)
    await n.send()
    [coupon] = await n.coupons()
    again = CouponOrder(
        code=coupon.code,
        kind=CouponKind.PERCENT,
        value=coupon.value,
        currency=None,
        starts_at=n.clock.now,
        expires_at=coupon.expires_at,
        customer_id=customer_id,
        email=f"{customer_id}@example.com",
        title="again",
        delivery=Delivery.CODE,
        store_id=n.store.store_id,
    )
    return coupon, PlatformClients(n.http, StoreRegistry([n.store])), again


async def test_shopify_code_exists_for_that_customer_before_the_email(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "7001")
    await n.send()
    [row] = await n.rows("7001")
    assert row.status == "sent"
    [coupon] = await n.coupons()
    assert coupon.platform == "shopify"
    assert coupon.confirmed_at is not None
    discount = state.discounts[coupon.code.upper()]
    assert coupon.platform_id == discount.id
    # For that one customer, single use, once per customer, 10 % off, expiring with our coupon.
    assert discount.customers == ["gid://shopify/Customer/7001"]
    assert discount.usage_limit == 1
    assert discount.once_per_customer
    assert discount.kind == "percentage"
    assert float(discount.value) == pytest.approx(0.10)
    assert discount.ends_at is not None
    assert datetime.fromisoformat(discount.ends_at.replace("Z", "+00:00")) == coupon.expires_at
    assert discount.combines_with == {
        "orderDiscounts": False,
        "productDiscounts": False,
        "shippingDiscounts": True,
    }
    [mail] = await mails_for(smtp_server, "7001")
    assert coupon.code in text_of(mail)
    # The shop's checkout takes it from that customer once, and from nobody else.
    now = datetime.now(UTC)
    assert shopify_admin.redeem(state, coupon.code, "gid://shopify/Customer/9999", now) is not None
    assert shopify_admin.redeem(state, coupon.code, "gid://shopify/Customer/7001", now) is None
    assert shopify_admin.redeem(state, coupon.code, "gid://shopify/Customer/7001", now) is not None


async def test_woocommerce_coupon_for_the_customers_email(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    site: tuple[str, woocommerce.SiteState],
) -> None:
    url, state = site
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, site_url=url))
    await abandon(n, "801")
    await n.plan(
        [
            funnel_event(
                "survey_scored",
                store_id,
                "802",
                n.clock.now,
                {"survey_id": "s-1", "level": "conative", "csat": 5},
            )
        ]
    )
    await n.send()
    assert [r.status for r in await n.rows()] == ["sent", "sent"]
    by_customer = {c.customer_id: c for c in await n.coupons()}
    cart = state.coupons[by_customer["801"].code.lower()]
    assert cart["discount_type"] == "percent"
    assert cart["amount"] == "10"
    assert cart["email_restrictions"] == ["801@example.com"]
    assert cart["usage_limit"] == 1
    assert cart["usage_limit_per_user"] == 1
    expires = by_customer["801"].expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert cart["date_expires_gmt"] == expires
    thanks = state.coupons[by_customer["802"].code.lower()]
    assert thanks["discount_type"] == "fixed_cart"
    assert thanks["amount"] == "5.00"


async def test_a_code_the_platform_already_has_is_found_not_created_again(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    """The notifier is killed between the shop's answer and our commit: the discount exists in the shop, our
    message is still `provisioning`. Taken again after the lease, the code is looked up and found: one
    discount, one create call, one email."""
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "7002")
    state.stall_after_create = 30.0
    first = asyncio.create_task(n.send())
    for _ in range(400):
        if state.discounts:
            break
        await asyncio.sleep(0.05)
    assert len(state.discounts) == 1, "the shop never received the create"
    first.cancel()  # the process dies here: the answer is never read, nothing after it is committed
    with pytest.raises(asyncio.CancelledError):
        await first
    [row] = await n.rows("7002")
    assert row.status == "provisioning"
    assert mails_to(smtp_server, "7002") == []

    state.stall_after_create = 0.0
    await n.send()  # within the lease: the interrupted claim is left alone
    assert (await n.rows("7002"))[0].status == "provisioning"
    n.clock.advance(PROVISIONING_LEASE + timedelta(seconds=1))
    await n.send()
    [row] = await n.rows("7002")
    assert row.status == "sent"
    assert state.calls.count("discountCodeBasicCreate") == 1
    [coupon] = await n.coupons()
    assert list(state.discounts) == [coupon.code.upper()]
    assert len(await mails_for(smtp_server, "7002")) == 1


async def test_woocommerce_code_already_on_the_site_is_not_created_twice(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    site: tuple[str, woocommerce.SiteState],
) -> None:
    """A sender created the coupon and died before recording it: taken again, the code is looked up on the
    site (`GET /coupons?code=`) and found, and no second `POST /coupons` goes out."""
    url, state = site
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, site_url=url))
    coupon, clients, order = await _made_then_asked_again(n, "803")
    assert state.calls.count("POST /coupons") == 1
    confirmed = await clients.ensure(n.store, CouponPlatform.WOOCOMMERCE, order)
    assert confirmed.created is False
    assert confirmed.platform_id == coupon.platform_id
    assert state.calls.count("POST /coupons") == 1


async def test_woocommerce_first_try_of_a_code_already_on_the_site_finds_it(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    site: tuple[str, woocommerce.SiteState],
) -> None:
    """A first try whose code is on the site all the same (a try nobody recorded): the site refuses the
    duplicate (`woocommerce_rest_coupon_code_already_exists`) and the code is looked up, not made twice."""
    url, state = site
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, site_url=url))
    coupon, clients, order = await _made_then_asked_again(n, "804")
    confirmed = await clients.ensure(n.store, CouponPlatform.WOOCOMMERCE, order, first_try=True)
    assert confirmed.created is False
    assert confirmed.platform_id == coupon.platform_id
    assert list(state.coupons) == [coupon.code.lower()]
    assert state.calls[-2:] == ["POST /coupons", "GET /coupons"]


@pytest.mark.parametrize("platform", ["shopify", "woocommerce"])
async def test_a_coupons_first_try_creates_it_without_a_lookup_and_counts_the_try(
    platform: str,
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
    site: tuple[str, woocommerce.SiteState],
) -> None:
    """A coupon never tried in the platform before goes straight to the create: one call, where a look-up
    first made two. (A later try looks it up first: the crash tests above.)"""
    # The SMTP server is the session's: a customer of each platform's run of its own.
    customer = "7011" if platform == "shopify" else "7012"
    if platform == "shopify":
        store = connected_store(store_id, tmp_path, shop_url=shop[0])
        calls, lookup, create = shop[1].calls, "codeDiscountNodeByCode", "discountCodeBasicCreate"
    else:
        store = connected_store(store_id, tmp_path, site_url=site[0])
        calls, lookup, create = site[1].calls, "GET /coupons", "POST /coupons"
    n = notifier(harness, engine, smtp_server, store)
    await abandon(n, customer)
    await n.send()
    [row] = await n.rows(customer)
    assert row.status == "sent"
    assert calls.count(create) == 1
    assert calls.count(lookup) == 0
    [coupon] = await n.coupons()
    assert coupon.platform == platform
    assert coupon.platform_attempts == 1
    assert len(await mails_for(smtp_server, customer)) == 1


async def test_revoked_token_skips_as_coupon_unavailable_and_shows_on_the_store(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, _ = shop
    store = connected_store(store_id, tmp_path, shop_url=url, token="shpat_revoked_000")
    n = notifier(harness, engine, smtp_server, store)
    before = (
        REGISTRY.get_sample_value(
            "notifier_coupon_unavailable_total", {"store_id": store_id, "platform": "shopify"}
        )
        or 0.0
    )
    await abandon(n, "7003")
    await n.send()
    [row] = await n.rows("7003")
    assert (row.status, row.skip_reason) == ("skipped", "coupon_unavailable")
    assert "401" in row.last_error
    assert "shpat" not in row.last_error
    assert mails_to(smtp_server, "7003") == []
    after = REGISTRY.get_sample_value(
        "notifier_coupon_unavailable_total", {"store_id": store_id, "platform": "shopify"}
    )
    assert after == before + 1
    async with engine.connect() as conn:
        [status] = (
            await conn.execute(select(store_connections).where(store_connections.c.store_id == store_id))
        ).all()
    assert status.status == "refused"
    assert "401" in status.reason


async def test_missing_scope_is_unavailable_not_retried(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    state.scopes.discard("write_discounts")
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "7004")
    await n.send()
    [row] = await n.rows("7004")
    assert (row.status, row.skip_reason) == ("skipped", "coupon_unavailable")
    assert "access denied" in row.last_error
    assert state.discounts == {}


async def test_shop_down_defers_with_backoff_then_sends(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "7005")
    state.fail_next = [503]
    await n.send()
    [row] = await n.rows("7005")
    assert row.status == "pending"
    assert row.due_at == n.clock.now + timedelta(seconds=30)
    assert "503" in row.last_error
    assert mails_to(smtp_server, "7005") == []
    state.fail_next = [502]
    n.clock.advance(timedelta(seconds=30))
    await n.send()
    [row] = await n.rows("7005")
    assert row.status == "pending"
    assert row.due_at == n.clock.now + timedelta(seconds=60)
    n.clock.advance(timedelta(seconds=60))
    await n.send()
    [row] = await n.rows("7005")
    assert row.status == "sent"
    assert len(state.discounts) == 1
    assert len(await mails_for(smtp_server, "7005")) == 1


async def test_shop_down_past_send_within_expires_as_unavailable(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "7006")
    state.fail_next = [503]
    [row] = await n.rows("7006")
    # Shortly before its send_within runs out, the shop is still away: waiting again would only let it
    # expire, so it is skipped now, with the reason.
    n.clock.now = row.send_before - timedelta(seconds=10)
    await n.send()
    [row] = await n.rows("7006")
    assert (row.status, row.skip_reason) == ("skipped", "coupon_unavailable")
    assert "expired" in row.last_error
    assert "503" in row.last_error
    assert mails_to(smtp_server, "7006") == []


async def test_cashback_as_store_credit_where_the_store_enables_it(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    store = connected_store(
        store_id,
        tmp_path,
        shop_url=url,
        store_credit=True,
        notifier_rules={"flows": {"review_request": {"enabled": False}, "follow_up": {"delay": 60}}},
    )
    n = notifier(harness, engine, smtp_server, store)
    await n.plan([funnel_event("order_placed", store_id, "7007", n.clock.now, ORDER)])
    n.clock.advance(timedelta(seconds=61))
    await n.send()
    rows = {r.flow: r for r in await n.rows("7007")}
    assert rows["follow_up"].status == "sent"
    [credit] = state.credits
    assert credit["owner"] == "gid://shopify/Customer/7007"
    assert credit["amount"] == {"amount": "3.00", "currencyCode": "EUR"}  # 5 % of 60.00
    [coupon] = await n.coupons()
    assert coupon.delivery == "store_credit"
    assert coupon.platform_id == credit["id"]
    assert state.discounts == {}
    [mail] = [m for m in await mails_for(smtp_server, "7007") if "win you over" in m["Subject"]]
    text = text_of(mail)
    # The email says it is credit on their account, not a code to type.
    assert "added" in text
    assert "no code needed" in text
    assert coupon.code not in text


async def test_segment_only_store_signed_coupon_webhook_before_the_email(
    engine: AsyncEngine, smtp_server: SmtpServer, harness: list[Notifier], store_id: str, tmp_path: Path
) -> None:
    """A store on neither platform: its coupon_webhook receives each coupon, signed, with an Idempotency-Key;
    the email waits for the 2xx (a 503 defers it, the retry carries the same key)."""
    with webhook_receiver([503]) as (url, received):
        store = connected_store(
            store_id, tmp_path, coupon_webhook={"url": url, "secret": "coupon-hook-secret"}
        )
        n = notifier(harness, engine, smtp_server, store)
        await abandon(n, "7010")
        await n.send()
        [row] = await n.rows("7010")
        assert row.status == "pending"
        assert mails_to(smtp_server, "7010") == []
        n.clock.advance(timedelta(seconds=30))
        await n.send()
        [row] = await n.rows("7010")
        assert row.status == "sent"
        first, second = received
        [coupon] = await n.coupons()
        assert coupon.platform == "webhook"
        assert (
            first.headers["Idempotency-Key"]
            == second.headers["Idempotency-Key"]
            == (f"coupon-{store_id}-{coupon.code}")
        )
        assert second.headers["X-LoyaltyFunnel-Signature"] == signature("coupon-hook-secret", second.body)
        body = second.json()
        assert (body["code"], body["customer_id"], body["email"], body["kind"], body["usage_limit"]) == (
            coupon.code,
            "7010",
            "7010@example.com",
            "percent",
            1,
        )
        [mail] = await mails_for(smtp_server, "7010")
        assert coupon.code in text_of(mail)


async def test_a_customer_the_shop_does_not_know_gets_a_single_use_code(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    """Known to us only through Segment (no Shopify id, an email the shop has no account for): the code still
    exists in the shop before the email, single use, open to any buyer (as Klaviyo's unique codes are)."""
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "web-5f2a")
    await n.send()
    [row] = await n.rows("web-5f2a")
    assert row.status == "sent"
    [coupon] = await n.coupons()
    discount = state.discounts[coupon.code.upper()]
    assert discount.customers == []
    assert discount.usage_limit == 1
    assert "customers" in state.calls  # looked up by email first
    [mail] = await mails_for(smtp_server, "web-5f2a")
    assert coupon.code in text_of(mail)


async def test_a_welcome_goes_out_while_its_claim_waits_for_a_marketing_coupon(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await abandon(n, "7020")  # marketing, its code to be created in the shop first
    first = {"from_stage": "prospect", "to_stage": "first_time", "reason": "test"}
    await n.plan([funnel_event("stage_changed", store_id, "7021", n.clock.now, first)])
    # The shop creates the discount, then holds its answer until the test lets it go.
    state.stall_after_create = 60
    steps = REGISTRY.get_sample_value("notifier_coupon_step_seconds_count") or 0.0
    sending = asyncio.create_task(n.send())
    try:
        await mails_for(smtp_server, "7021")  # the welcome, within 10 s: long before the shop answers
        assert mails_to(smtp_server, "7020") == []
        [cart] = await n.rows("7020")
        assert cart.status == "provisioning"
    finally:
        state.stall_after_create = 0
    assert await asyncio.wait_for(sending, 30) == 2
    [mail] = await mails_for(smtp_server, "7020")
    [coupon] = await n.coupons()
    assert coupon.code in text_of(mail)
    assert [r.status for r in await n.rows()] == ["sent", "sent"]
    assert REGISTRY.get_sample_value("notifier_coupon_step_seconds_count") == steps + 1  # one claim, one step

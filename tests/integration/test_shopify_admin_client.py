"""The Shopify Admin API client against the test shop (deploy/platforms/shopify_admin.py), over real HTTP:
the cost-based rate limit, THROTTLED, userErrors by field, lookups before creates, and a first try's create
without one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from deploy.platforms import shopify_admin
from deploy.platforms.server import serving
from services.notifier.adapters.shopify_admin import ShopifyAdmin
from services.notifier.domain.coupon_platforms import CouponOrder, Delivery, PlatformRefused, StoreWideRefusal
from shared.notifier_rules import CouponKind
from shared.stores import DiscountCombination

pytestmark = pytest.mark.integration

TOKEN = "shpat_client_test"


@pytest.fixture
def shop() -> Iterator[tuple[str, shopify_admin.ShopState]]:
    # A small bucket (30 points, 30 points/s) so a handful of coupons is already a burst.
    state = shopify_admin.ShopState(token=TOKEN, maximum=30, available=30, restore_rate=30)
    with serving(shopify_admin.create_app(state)) as url:
        yield f"{url}/admin/api/2025-10/graphql.json", state


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def order(code: str, customer: str = "42", **changes: object) -> CouponOrder:
    now = datetime.now(UTC).replace(microsecond=0)
    fields: dict[str, object] = {
        "code": code,
        "kind": CouponKind.PERCENT,
        "value": Decimal("15"),
        "currency": None,
        "starts_at": now,
        "expires_at": now + timedelta(days=3),
        "customer_id": customer,
        "email": f"{customer}@example.com",
        "title": f"test {code}",
        "delivery": Delivery.CODE,
        "store_id": "s",
    }
    fields.update(changes)
    return CouponOrder(**fields)  # type: ignore[arg-type]


async def test_a_burst_of_coupons_waits_for_the_bucket_instead_of_being_throttled(
    shop: tuple[str, shopify_admin.ShopState], http: httpx.AsyncClient
) -> None:
    url, state = shop
    client = ShopifyAdmin(http, url=url, token=TOKEN)
    await client.find_discount("WARMUP")  # the first answer tells the client the shop's bucket
    started = asyncio.get_running_loop().time()
    confirmed = await asyncio.gather(
        *(client.ensure_discount(order(f"BURST{i}", str(100 + i)), DiscountCombination()) for i in range(8))
    )
    elapsed = asyncio.get_running_loop().time() - started
    assert all(c.created for c in confirmed)
    assert sorted(state.discounts) == sorted(f"BURST{i}" for i in range(8))
    assert state.throttled == 0
    # 8 x (lookup + create) is far more than the 30-point bucket: the client paced itself to the refill rate.
    assert elapsed > 1.0


async def test_throttled_answer_is_waited_out_and_retried(
    shop: tuple[str, shopify_admin.ShopState], http: httpx.AsyncClient
) -> None:
    url, state = shop
    # Another app of the shop emptied the bucket just now: our first call is THROTTLED.
    state.available, state.restore_rate, state.refilled_at = 0, 5, time.monotonic()
    client = ShopifyAdmin(http, url=url, token=TOKEN)
    confirmed = await client.ensure_discount(order("AFTERWAIT"), DiscountCombination())
    assert confirmed.created
    assert state.throttled >= 1
    assert "AFTERWAIT" in state.discounts


async def test_user_errors_are_reported_by_field(
    shop: tuple[str, shopify_admin.ShopState], http: httpx.AsyncClient
) -> None:
    url, state = shop
    client = ShopifyAdmin(http, url=url, token=TOKEN)
    now = datetime.now(UTC)
    bad = order("BACKWARDS", starts_at=now, expires_at=now - timedelta(days=1))
    with pytest.raises(PlatformRefused) as refused:
        await client.ensure_discount(bad, DiscountCombination())
    assert "basicCodeDiscount.endsAt: Ends at needs to be after starts_at" in refused.value.reason
    assert state.discounts == {}


async def test_existing_code_is_found_not_created(
    shop: tuple[str, shopify_admin.ShopState], http: httpx.AsyncClient
) -> None:
    url, state = shop
    client = ShopifyAdmin(http, url=url, token=TOKEN)
    first = await client.ensure_discount(order("ONCE"), DiscountCombination())
    again = await client.ensure_discount(order("once"), DiscountCombination())  # codes are case-insensitive
    assert first.created
    assert not again.created
    assert again.platform_id == first.platform_id
    assert state.calls.count("discountCodeBasicCreate") == 1


async def test_a_first_try_creates_without_a_lookup_and_a_code_already_there_is_found(
    shop: tuple[str, shopify_admin.ShopState], http: httpx.AsyncClient
) -> None:
    url, state = shop
    client = ShopifyAdmin(http, url=url, token=TOKEN)
    first = await client.ensure_discount(order("FIRSTTRY"), DiscountCombination(), first_try=True)
    assert first.created
    assert state.calls == ["discountCodeBasicCreate"]  # customer 42's GID needs no look-up either
    # A try nobody recorded made the code already (a crash before our commit, under an older counting):
    # the shop refuses it as TAKEN, and the code is found, not made twice.
    again = await client.ensure_discount(order("firsttry"), DiscountCombination(), first_try=True)
    assert not again.created
    assert again.platform_id == first.platform_id
    assert list(state.discounts) == ["FIRSTTRY"]
    assert state.calls[1:] == ["discountCodeBasicCreate", "codeDiscountNodeByCode"]


async def test_wrong_token_is_a_store_wide_refusal_without_the_token(
    shop: tuple[str, shopify_admin.ShopState], http: httpx.AsyncClient
) -> None:
    url, _ = shop
    client = ShopifyAdmin(http, url=url, token="shpat_wrong_value")
    with pytest.raises(StoreWideRefusal) as refused:
        await client.find_discount("ANY")
    assert "401" in refused.value.reason
    assert "shpat_wrong_value" not in refused.value.reason

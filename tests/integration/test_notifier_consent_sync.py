"""An unsubscribe, a complaint or a permanent bounce here reaches the store's platform: the real consent
worker, real Postgres, and the test shop and site of deploy/platforms (as Shopify and WooCommerce say)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.platforms import shopify_admin, woocommerce
from services.notifier.adapters import consent_repository, repository
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.entrypoints.consent_sync import ConsentSync
from shared.stores import StoreRegistry
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Notifier
from tests.integration.test_notifier_platform_coupons import connected_store, notifier

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(engine: AsyncEngine, smtp_server: SmtpServer) -> AsyncIterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for n in made:
        await n.http.aclose()


def worker(n: Notifier) -> ConsentSync:
    registry = StoreRegistry([n.store])
    return ConsentSync(
        engine=n.engine, stores=registry, platforms=PlatformClients(n.http, registry), clock=n.clock
    )


async def unsubscribe(n: Notifier, customer_id: str) -> None:
    """What `POST /u/{token}` does: the unsubscription and its consent change in one transaction."""
    await n.plan([funnel_event("customer_updated", n.store.store_id, customer_id, n.clock.now, {})])
    async with n.engine.begin() as conn:
        customer = (await repository.lock_customers(conn, [(n.store.store_id, customer_id)]))[
            (n.store.store_id, customer_id)
        ]
        assert customer.unsubscribe_token is not None
        done = await repository.unsubscribe(conn, customer.unsubscribe_token, n.clock.now)
        assert done is not None
        await consent_repository.record(
            conn, n.store, customer_id, subscribed=False, reason="unsubscribe", at=n.clock.now
        )


async def test_unsubscribe_reaches_the_shops_consent_with_its_time(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await unsubscribe(n, "9001")
    assert await worker(n).step() == 1
    consent = state.consent["gid://shopify/Customer/9001"]
    assert consent["marketingState"] == "UNSUBSCRIBED"
    assert consent["consentUpdatedAt"] == n.clock.now.isoformat(timespec="seconds").replace("+00:00", "Z")
    async with engine.connect() as conn:
        [change] = await consent_repository.for_customer(conn, store_id, "9001")
    assert change.status == "done"
    assert await worker(n).step() == 0  # told once


async def test_shop_away_retries_then_tells_it(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, state = shop
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, shop_url=url))
    await unsubscribe(n, "9002")
    state.fail_next = [503]
    await worker(n).step()
    assert state.consent == {}
    async with engine.connect() as conn:
        [change] = await consent_repository.for_customer(conn, store_id, "9002")
    assert change.status == "pending"
    assert change.next_attempt_at == n.clock.now + timedelta(seconds=30)
    n.clock.advance(timedelta(seconds=30))
    await worker(n).step()
    assert state.consent["gid://shopify/Customer/9002"]["marketingState"] == "UNSUBSCRIBED"


async def test_revoked_token_fails_the_change_and_marks_the_store(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    shop: tuple[str, shopify_admin.ShopState],
) -> None:
    url, _ = shop
    store = connected_store(store_id, tmp_path, shop_url=url, token="shpat_revoked")
    n = notifier(harness, engine, smtp_server, store)
    await unsubscribe(n, "9003")
    await worker(n).step()
    async with engine.connect() as conn:
        [change] = await consent_repository.for_customer(conn, store_id, "9003")
    assert change.status == "failed"
    assert "401" in change.last_error


async def test_woocommerce_opt_in_field_is_withdrawn(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    site: tuple[str, woocommerce.SiteState],
) -> None:
    url, state = site
    base = connected_store(store_id, tmp_path, site_url=url)
    assert base.woocommerce is not None
    store = base.model_copy(
        update={"woocommerce": base.woocommerce.model_copy(update={"consent_meta_key": "_newsletter_opt_in"})}
    )
    n = notifier(harness, engine, smtp_server, store)
    await unsubscribe(n, "321")
    await worker(n).step()
    assert state.customers["321"]["meta_data"][-1]["key"] == "_newsletter_opt_in"
    assert state.customers["321"]["meta_data"][-1]["value"] == "no"


async def test_a_woocommerce_site_without_an_opt_in_field_is_not_told(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    harness: list[Notifier],
    store_id: str,
    tmp_path: Path,
    site: tuple[str, woocommerce.SiteState],
) -> None:
    url, state = site
    n = notifier(harness, engine, smtp_server, connected_store(store_id, tmp_path, site_url=url))
    await unsubscribe(n, "322")
    assert await worker(n).step() == 0
    assert state.customers == {}

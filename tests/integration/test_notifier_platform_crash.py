"""The real notifier process SIGKILLed between the store platform's creating a coupon and our commit.

The test shop (or site) creates the discount, then holds its answer. While it is held the notifier process is
killed: the code exists in the shop, our message is still `provisioning`, nothing was sent. Started again, the
notifier takes the message back once NOTIFIER_PROVISIONING_LEASE_SECONDS have passed, looks the code up
(Shopify `codeDiscountNodeByCode`, WooCommerce `GET /coupons?code=`), finds it, and sends the email: one code
in the shop for that (customer, flow, trigger), one email, carrying that code.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.chaos.run import chaos_registry
from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import PostgresServer
from deploy.devstack.process import ManagedProcess
from deploy.platforms import shopify_admin, woocommerce
from deploy.platforms.server import serving
from services.notifier.adapters.tables import coupons, messages
from shared.db import upgrade_to_head
from shared.settings import REPO_ROOT
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store
from tests.polling import eventually

pytestmark = pytest.mark.integration

LEASE_SECONDS = 5  # NOTIFIER_PROVISIONING_LEASE_SECONDS of the notifier under test
TOKEN = "shpat_crash_0123456789abcdef"
KEY, SECRET = "ck_crash_key_0123", "cs_crash_secret_0123"
CART = {
    "cart_id": "k-crash",
    "items": [{"product_id": "p-kit", "title": "Pour-Over Kit", "quantity": 1, "price": "59.90"}],
    "total": "59.90",
    "currency": "EUR",
    "recovery_url": "https://demo-store.example/cart/k-crash",
    "source": "timer",
}


class Platform:
    """One test platform (shop or site) on a free port: what it created, and the hold on its answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shop = shopify_admin.ShopState(token=TOKEN)
        self.site = woocommerce.SiteState(key=KEY, secret=SECRET)

    def hold_answers(self, seconds: float) -> None:
        self.shop.stall_after_create = seconds
        self.site.stall_after_create = seconds

    def codes(self) -> list[str]:
        """Every code the platform holds, upper-cased."""
        if self.name == "shopify":
            with self.shop.lock:
                return [d.code.upper() for d in self.shop.discounts.values()]
        with self.site.lock:
            return [str(c["code"]).upper() for c in self.site.coupons.values()]

    def creates(self) -> int:
        calls = self.shop.calls if self.name == "shopify" else self.site.calls
        wanted = "discountCodeBasicCreate" if self.name == "shopify" else "POST /coupons"
        return calls.count(wanted)

    def lookups(self) -> int:
        calls = self.shop.calls if self.name == "shopify" else self.site.calls
        wanted = "codeDiscountNodeByCode" if self.name == "shopify" else "GET /coupons"
        return calls.count(wanted)

    def holder_of(self, code: str) -> list[str]:
        """Who may use the code: the customer GIDs (Shopify) or the emails (WooCommerce) it is limited to."""
        if self.name == "shopify":
            return list(self.shop.discounts[code.upper()].customers)
        return list(self.site.coupons[code.lower()]["email_restrictions"])


@contextmanager
def platform_servers(name: str) -> Iterator[tuple[Platform, int, int]]:
    platform = Platform(name)
    with (
        serving(shopify_admin.create_app(platform.shop)) as shop_url,
        serving(woocommerce.create_app(platform.site)) as site_url,
    ):
        yield platform, _port(shop_url), _port(site_url)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
async def database(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database of its own: the notifier process sends every due message it finds."""
    url = postgres_server.create_database(f"pcrash_{uuid.uuid4().hex[:10]}")
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "notifier" / "migrations", url)
    engine = create_async_engine(url)
    yield url, engine
    await engine.dispose()


def registry(tmp_path: Path, name: str, shop_port: int, site_port: int) -> Path:
    """The development registry with the demo store's shop and site on this test's ports. For WooCommerce,
    the Shopify Admin API is disconnected (Shopify comes first when both are)."""
    path = chaos_registry(tmp_path / "stores.yaml", shop_port, site_port)
    if name == "woocommerce":
        document = yaml.safe_load(path.read_text())
        shopify = document["stores"]["demo"]["shopify"]
        shopify.pop("admin_api_url")
        shopify.pop("admin_token_env")
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize("name", ["shopify", "woocommerce"])
async def test_a_notifier_killed_while_the_platform_answers_creates_one_code_and_sends_one_email(
    name: str,
    database: tuple[str, AsyncEngine],
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    url, engine = database
    # Numeric: the test shop knows any numeric customer id, as the demo's simulated customers are.
    customer = str(secrets.randbelow(10**9) + 10**9)
    email = f"{customer}@example.com"
    now = datetime.now(UTC)
    harness = Notifier(engine, dev_store("demo"), Clock(now), smtp_server.host, smtp_server.port)
    payload = dict(CART, last_activity_at=(now - timedelta(hours=1)).isoformat())
    await harness.plan([funnel_event("cart_abandoned", "demo", customer, now, payload)])
    await harness.http.aclose()
    [api_port, closed_port] = free_ports(2)

    with platform_servers(name) as (platform, shop_port, site_port):
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SMTP_HOST": smtp_server.host,
            "SMTP_PORT": str(smtp_server.port),
            "STORES_FILE": str(registry(tmp_path, name, shop_port, site_port)),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}",  # the sender needs no broker
            "NOTIFIER_PORT": str(api_port),
            "NOTIFIER_PIDFILE": str(tmp_path / "notifier-run.pid"),
            "NOTIFIER_PROVISIONING_LEASE_SECONDS": str(LEASE_SECONDS),
            "DEMO_SHOPIFY_ADMIN_TOKEN": TOKEN,
            "DEMO_WOO_KEY": KEY,
            "DEMO_WOO_SECRET": SECRET,
            "ENVIRONMENT": "test",
        }
        notifier = ManagedProcess("notifier", tmp_path / "notifier.pid", tmp_path / "notifier.log")
        command = [sys.executable, "-m", "services.notifier", "serve"]
        # Far longer than the notifier's HTTP timeout would matter: the kill comes first.
        platform.hold_answers(120.0)
        try:
            notifier.start(command, env=env, cwd=REPO_ROOT, die_with_parent=True)

            async def created() -> bool:
                if not notifier.is_running():
                    pytest.fail(f"the notifier exited:\n{notifier.log_tail()}")
                return bool(platform.codes())

            await eventually(created, 120, f"the coupon's creation in the test {name}", every=0.05)
            pid = notifier.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # the platform's answer is held: it never reaches our commit

            async def gone() -> bool:
                return not notifier.is_running()

            await eventually(gone, 120, "the notifier's death")
            platform.hold_answers(0.0)
            [row] = await _messages(engine, customer)
            assert row.status == "provisioning"
            assert _mails(smtp_server, email) == []
            assert platform.creates() == 1
            lookups_before = platform.lookups()

            notifier.start(command, env=env, cwd=REPO_ROOT, die_with_parent=True)

            async def sent() -> bool:
                if not notifier.is_running():
                    pytest.fail(f"the notifier exited:\n{notifier.log_tail()}")
                return bool([r for r in await _messages(engine, customer) if r.status == "sent"])

            await eventually(sent, 120, "the email after the restart")
            # A little longer, so a second email or code would have had its chance to appear.
            await asyncio.sleep(2 * LEASE_SECONDS)
        finally:
            notifier.stop(timeout=15)

        # One code in the platform, made for this customer only, found (not created) by the restart.
        [code] = platform.codes()
        assert platform.creates() == 1
        assert platform.lookups() > lookups_before
        expected_holder = f"gid://shopify/Customer/{customer}" if name == "shopify" else email
        assert platform.holder_of(code) == [expected_holder]

    [row] = await _messages(engine, customer)
    assert row.status == "sent"
    async with engine.connect() as conn:
        ours = (await conn.execute(select(coupons).where(coupons.c.customer_id == customer))).all()
    assert [c.code.upper() for c in ours] == [code]
    assert ours[0].platform_id is not None
    # One email, carrying that code.
    [mail] = _mails(smtp_server, email)
    assert ours[0].code in str(mail.get_body(("plain",)).get_content())


async def _messages(engine: AsyncEngine, customer: str) -> list[Any]:
    async with engine.connect() as conn:
        query = select(messages).where(messages.c.customer_id == customer).order_by(messages.c.id)
        return list((await conn.execute(query)).all())


def _mails(smtp: SmtpServer, to: str) -> list[Any]:
    return [m for m in smtp.messages if m["To"] == to]

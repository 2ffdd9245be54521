"""The notifier's planner and sender wired to the session's real Postgres and SMTP server, with a clock the
test moves by hand."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.devstack.ports import free_ports
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.adapters.recommendations import Recommender
from services.notifier.adapters.smtp import SmtpSender
from services.notifier.adapters.tables import coupons, messages
from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.entrypoints.coupon_provisioning import CouponProvisioning
from services.notifier.entrypoints.processor import MessagePlanner
from services.notifier.entrypoints.sender import MessageSender
from shared.funnel_events import FunnelEvent
from shared.settings import REPO_ROOT, SmtpSettings
from shared.stores import StoreConfig, StoreRegistry


def dev_store(store_id: str, **notifier: Any) -> StoreConfig:
    """The development registry's demo store under another id, with notifier settings overridden."""
    demo = StoreRegistry.load(REPO_ROOT / "deploy" / "stores.dev.yaml").get("demo")
    assert demo is not None
    rules = demo.notifier.model_dump(exclude_defaults=True) | notifier
    fields = demo.model_dump(exclude={"api_key_sha256"})
    return StoreConfig.model_validate(
        fields | {"store_id": store_id, "notifier": rules, "api_key": "test-api-key"}
    )


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Notifier:
    engine: AsyncEngine
    store: StoreConfig
    clock: Clock
    smtp_host: str
    smtp_port: int
    http: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    # With platforms, coupons are created in the store's Shopify / WooCommerce / coupon webhook before the
    # message goes out (as in the running notifier); without, they stay ours (tests of other concerns).
    platforms: bool = False

    def sender(self, *, smtp_port: int | None = None, batch_size: int = 50) -> MessageSender:
        return MessageSender(**self.sender_settings(smtp_port=smtp_port, batch_size=batch_size))

    def sender_settings(self, *, smtp_port: int | None = None, batch_size: int = 50) -> dict[str, Any]:
        """What a sender is built with here (one SMTP client of its own per call)."""
        # The segmenter is not running in these tests: complements are unavailable and fall back.
        [closed] = free_ports(1)
        registry = StoreRegistry([self.store])
        provisioning = (
            CouponProvisioning(self.engine, PlatformClients(self.http, registry), self.clock)
            if self.platforms
            else None
        )
        return dict(
            engine=self.engine,
            stores=registry,
            coupon_provisioning=provisioning,
            renderer=TemplateRenderer(),
            # A generous timeout: the SMTP server runs in this test process, and on a loaded 2-core machine
            # 16 concurrent connects (four senders of four lanes) can take seconds to be accepted. A closed
            # port is still refused at once.
            smtp=SmtpSender(
                SmtpSettings(
                    smtp_host=self.smtp_host, smtp_port=smtp_port or self.smtp_port, smtp_timeout_seconds=30
                )
            ),
            webhooks=WebhookSender(self.http),
            recommender=Recommender(self.engine, self.http, f"http://127.0.0.1:{closed}"),
            public_url="https://notify.loyalty-funnel.test",
            clock=self.clock,
            batch_size=batch_size,
            max_attempts=3,
        )

    async def plan(self, events: Sequence[FunnelEvent]) -> None:
        await MessagePlanner(self.engine, StoreRegistry([self.store]), self.clock)(events)

    async def send(self) -> int:
        return await self.sender().send_due()

    async def rows(self, customer_id: str | None = None) -> list[Any]:
        where = [messages.c.store_id == self.store.store_id]
        if customer_id is not None:
            where.append(messages.c.customer_id == customer_id)
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(messages).where(*where).order_by(messages.c.id))).all())

    async def coupons(self) -> list[Any]:
        async with self.engine.connect() as conn:
            query = select(coupons).where(coupons.c.store_id == self.store.store_id).order_by(coupons.c.id)
            return list((await conn.execute(query)).all())


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@contextmanager
def webhook_receiver(statuses: Sequence[int] = ()) -> Iterator[tuple[str, list[Received]]]:
    """A real HTTP server on loopback that records requests; answers `statuses` in turn, then 200."""
    received: list[Received] = []
    answers = list(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(answers.pop(0) if answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()

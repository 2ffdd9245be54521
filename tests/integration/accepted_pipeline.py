"""What the properties from outside share (test_accepted_events_are_decidable.py for Segment calls,
test_accepted_webhooks_are_decidable.py for the platforms' webhooks): ingest's real routes on a publisher
that keeps the bytes Kafka would get, and the rest of the way for whatever ingest accepted: the segmenter's
own decoder (`decode_decidable`), `FunnelProcessor` and its `TimerWorker`, then the notifier's planner and
sender, on a real PostgreSQL and SMTP server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import httpx
import msgspec
from hypothesis import HealthCheck, note, settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from services.notifier.domain.messages import MessageStatus
from services.segmenter.adapters.event_decoding import decode_decidable
from services.segmenter.adapters.tables import processed_events
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.entrypoints.timers import TimerWorker
from shared.events import PublishableEvent, encode_event
from shared.settings import REPO_ROOT
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store
from tests.integration.test_segmenter_engine import funnel_events, registry


def property_settings(examples: int, search: bool) -> settings:
    """The same examples on every run (so that `make test` is repeatable), or a search for new ones."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=not search,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


class KeepingPublisher:
    """Stands in for Kafka's producer: keeps each accepted event's message value, as the broker would."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def connect_forever(self) -> None:
        return None

    async def publish_many(self, events: Sequence[PublishableEvent]) -> None:
        self.values.extend(encode_event(e) for e in events)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@asynccontextmanager
async def keeping_ingest(now: datetime) -> AsyncIterator[tuple[httpx.AsyncClient, KeepingPublisher]]:
    """Ingest with the development registry (the `demo` store and its secrets), its clock at `now`."""
    publisher = KeepingPublisher()
    app = create_app(
        IngestSettings(stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml"),
        publisher=publisher,
        clock=lambda: now,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as client,
    ):
        yield client, publisher


async def decide_and_send(
    values: list[bytes], engine: AsyncEngine, smtp_server: SmtpServer, now: datetime
) -> None:
    """Decode, decide and fire the timers of what ingest published, plan and send what that announced, in a
    store of this call's own; nothing may raise, every event must be recorded as processed, and no message
    may end `failed`."""
    store_id = f"p{uuid.uuid4().hex[:12]}"
    # The events as the segmenter reads them from Kafka, each moved to the store of this call.
    events = [msgspec.structs.replace(decode_decidable(v), store_id=store_id) for v in values]
    stores = registry(store_id)
    await FunnelProcessor(engine, stores)(events)
    # What the segmenter announced, the notifier plans and sends (the demo store's flows and templates) as
    # the time of each flow comes; then, three years on, the timers fire and the same for what they announce.
    notifier = Notifier(engine, dev_store(store_id), Clock(now), smtp_server.host, smtp_server.port)
    announced = await funnel_events(engine, store_id)
    await notifier.plan(announced)
    for step in (timedelta(0), timedelta(hours=2), timedelta(days=2), timedelta(days=10), timedelta(days=60)):
        notifier.clock.now = now + step
        while await notifier.send():
            pass
    later = now + timedelta(days=3 * 365)
    worker = TimerWorker(engine, stores, lambda: later)
    while await worker.fire_due():
        pass
    async with engine.connect() as conn:
        processed = await conn.scalar(
            select(func.count()).select_from(processed_events).where(processed_events.c.store_id == store_id)
        )
    assert processed == len({e.event_id for e in events})
    notifier.clock.now = later
    await notifier.plan((await funnel_events(engine, store_id))[len(announced) :])
    while await notifier.send():
        pass
    for row in await notifier.rows():
        note(f"message {row.flow} {row.status}")
        assert row.status != MessageStatus.FAILED, row

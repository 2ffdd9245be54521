"""The notifier's at-most-once delivery against a real Postgres and a real SMTP server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.adapters.smtp import SmtpSender
from services.notifier.adapters.tables import messages
from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.entrypoints.processor import MessagePlanner
from services.notifier.entrypoints.sender import MessageSender
from shared.examples import example_files
from shared.funnel_events import FunnelEvent, StageChangedEvent, decode_funnel_event
from shared.settings import REPO_ROOT, SmtpSettings
from shared.stores import StoreRegistry
from tests.fixtures.stack import SmtpServer, free_ports

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, 14, 31, tzinfo=UTC)


def _welcome_trigger(store_id: str, customer_id: str) -> StageChangedEvent:
    [path] = [p for p in example_files("funnel-events") if p.stem == "stage_changed"]
    event = decode_funnel_event(path.read_bytes())
    assert isinstance(event, StageChangedEvent)
    email = f"{customer_id}@example.com"
    profile = event.profile.model_copy(
        update={"customer_id": customer_id, "email": email, "first_name": "Ines"}
    )
    return event.model_copy(update={"store_id": store_id, "customer_id": customer_id, "profile": profile})


def _stores(store_id: str) -> StoreRegistry:
    demo = StoreRegistry.load(REPO_ROOT / "deploy" / "stores.dev.yaml").get("demo")
    assert demo is not None
    return StoreRegistry([demo.model_copy(update={"store_id": store_id})])


def _sender(engine: AsyncEngine, store_id: str, host: str, port: int) -> MessageSender:
    return MessageSender(
        engine=engine,
        stores=_stores(store_id),
        renderer=TemplateRenderer(),
        smtp=SmtpSender(SmtpSettings(smtp_host=host, smtp_port=port, smtp_timeout_seconds=5)),
        clock=lambda: NOW,
        batch_size=10,
        max_attempts=3,
    )


async def _rows(engine: AsyncEngine, store_id: str) -> list[tuple[str, str, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(messages.c.flow, messages.c.status, messages.c.attempts).where(
                messages.c.store_id == store_id
            )
        )
        return [(r.flow, r.status, r.attempts) for r in result.all()]


async def _plan(engine: AsyncEngine, events: Sequence[FunnelEvent]) -> None:
    await MessagePlanner(engine, lambda: NOW)(events)


async def test_a_redelivered_funnel_event_sends_nothing_new(
    engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    trigger = _welcome_trigger(store_id, "c1")
    await _plan(engine, [trigger, trigger])  # a duplicate inside one batch...
    await _plan(engine, [trigger])  # ...and redelivered in a later one
    sender = _sender(engine, store_id, smtp_server.host, smtp_server.port)
    assert await sender.send_due() == 1
    assert await sender.send_due() == 0
    [message] = [m for m in smtp_server.messages if m["To"] == "c1@example.com"]
    assert message["Subject"] == "Thank you for your order, Ines!"
    assert await _rows(engine, store_id) == [("welcome", "sent", 1)]


async def test_a_crash_between_claim_and_send_never_sends_twice(
    engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    await _plan(engine, [_welcome_trigger(store_id, "c2")])
    async with engine.begin() as conn:  # claimed, then the process "dies" before the SMTP conversation
        [claimed] = await repository.claim_due(conn, NOW, 10)
    assert claimed.status == "sending"
    sender = _sender(engine, store_id, smtp_server.host, smtp_server.port)
    assert await sender.send_due() == 0
    assert [m for m in smtp_server.messages if m["To"] == "c2@example.com"] == []
    assert await _rows(engine, store_id) == [("welcome", "sending", 1)]


async def test_smtp_unreachable_schedules_a_retry_instead_of_losing_the_message(
    engine: AsyncEngine, store_id: str
) -> None:
    await _plan(engine, [_welcome_trigger(store_id, "c3")])
    [closed_port] = free_ports(1)
    sender = _sender(engine, store_id, "127.0.0.1", closed_port)
    assert await sender.send_due() == 1
    assert await _rows(engine, store_id) == [("welcome", "pending", 1)]
    assert await sender.send_due() == 0  # not due again until the backoff has passed

"""The sender records the outcomes of a claim on one connection of its own: when the database drops that
connection between two messages, the next outcome is still recorded (on a fresh connection), once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.notifier.adapters.smtp import DeliveryError
from services.notifier.entrypoints.sender import Claimed, MessageSender
from shared.db import check_pooled_connections
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
FIRST_ORDER = {"from_stage": "prospect", "to_stage": "first_time", "reason": "test"}
APP = "notifier-outcomes-test"


@pytest.fixture
async def own_engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    """The service's pool checks (shared.db: a connection the server closed is replaced when handed out),
    under a name of its own so the test can drop exactly its connections."""
    engine = create_async_engine(migrated_url, connect_args={"server_settings": {"application_name": APP}})
    check_pooled_connections(engine)
    yield engine
    await engine.dispose()


class DroppingSender(MessageSender):
    """Drops this engine's idle connections (the outcome connection among them) before the second message's
    outcome is recorded, as a database restart between two messages would."""

    def __init__(self, *, admin: AsyncEngine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._admin = admin
        self.delivered = 0

    async def _deliver(self, claimed: Claimed) -> str | DeliveryError:
        outcome = await super()._deliver(claimed)
        self.delivered += 1
        if self.delivered == 2:
            async with self._admin.connect() as conn:
                dropped = await conn.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = :app AND state = 'idle'"
                    ),
                    {"app": APP},
                )
            assert dropped >= 1
        return outcome


async def test_an_outcome_connection_dropped_between_two_messages_still_records_both_once(
    engine: AsyncEngine, own_engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    notifier = Notifier(own_engine, dev_store(store_id), Clock(T0), smtp_server.host, smtp_server.port)
    try:
        customers = [f"first-{store_id}", f"second-{store_id}"]
        await notifier.plan([funnel_event("stage_changed", store_id, c, T0, FIRST_ORDER) for c in customers])
        # One lane: the messages of a claim go out one after the other, their outcomes on one connection.
        # (Other tests' messages may be due in this shared database too: they go out first, and the
        # connection is dropped between whichever two messages come first.)
        sender = DroppingSender(admin=engine, **notifier.sender_settings() | {"lanes": 1})
        for _ in range(50):
            if not await sender.send_due():
                break
        assert sender.delivered >= 2
        rows = await notifier.rows()
        assert sorted((r.customer_id, r.status) for r in rows) == [(c, "sent") for c in sorted(customers)]
        for customer_id in customers:
            assert len([m for m in smtp_server.messages if m["To"] == f"{customer_id}@example.com"]) == 1
    finally:
        await notifier.http.aclose()

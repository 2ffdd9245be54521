"""The sender records the outcomes of a claim on one connection of its own: when the database drops that
connection between two messages, the next outcome is still recorded (on a fresh connection), once; outcomes
of lanes that finish together are recorded together, each only if the claim still holds its message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.notifier.adapters import repository
from services.notifier.adapters.smtp import DeliveryError
from services.notifier.entrypoints.sender import Claimed, MessageSender, _OutcomeConnection
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


async def test_outcomes_of_lanes_finishing_together_are_recorded_together_when_the_claim_holds_them(
    engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    notifier = Notifier(engine, dev_store(store_id), Clock(T0), smtp_server.host, smtp_server.port)
    try:
        customers = [f"lane{i}-{store_id}" for i in range(4)]
        await notifier.plan([funnel_event("stage_changed", store_id, c, T0, FIRST_ORDER) for c in customers])
        ids = {r.customer_id: r.id for r in await notifier.rows()}
        ours, other = str(uuid.uuid4()), str(uuid.uuid4())
        until = T0 + timedelta(minutes=2)
        async with engine.begin() as conn:
            slots = [repository.ClaimSlot(ids[c], None, lane, 0) for lane, c in enumerate(customers[:3])]
            await repository.claim_many(conn, ours, slots, T0, until)
            await repository.claim_many(
                conn, other, [repository.ClaimSlot(ids[customers[3]], None, 0, 0)], T0, until
            )
        outcomes = _OutcomeConnection(engine)
        try:
            # The first is written alone; the three that came meanwhile in one statement.
            held = await asyncio.gather(
                *(outcomes.mark_sent(ids[c], ours, f"subject {c}", T0) for c in customers)
            )
        finally:
            await outcomes.close()
        assert held == [True, True, True, False]
        rows = {r.customer_id: r for r in await notifier.rows()}
        assert [(rows[c].status, rows[c].subject, rows[c].sent_at) for c in customers[:3]] == [
            ("sent", f"subject {c}", T0) for c in customers[:3]
        ]
        assert (rows[customers[3]].status, rows[customers[3]].claim_id) == ("sending", other)
    finally:
        await notifier.http.aclose()

"""The notifier's copy of a customer's consent follows the source's consent times, on a real Postgres: an
older snapshot (a funnel event delivered again, or late) cannot undo a withdrawal, and our own unsubscribe is
never undone by a snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.adapters.tables import customers
from shared.funnel_events import ProfileSnapshot

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 12, tzinfo=UTC)


def snapshot(accepts: bool | None, consent_at: datetime | None) -> ProfileSnapshot:
    return ProfileSnapshot(
        customer_id="c1",
        email="c1@example.com",
        stage="first_time",
        accepts_marketing=accepts,
        consent_at=consent_at,
    )


async def held(engine: AsyncEngine, store_id: str) -> Any:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    customers.c.accepts_marketing, customers.c.consent_updated_at, customers.c.unsubscribed_at
                ).where(customers.c.store_id == store_id, customers.c.customer_id == "c1")
            )
        ).one()
    return tuple(row)


async def upsert(engine: AsyncEngine, store_id: str, *snapshots: ProfileSnapshot) -> None:
    for s in snapshots:  # one batch each, as separate funnel-event batches would be
        async with engine.begin() as conn:
            await repository.upsert_customers(conn, [(store_id, s)])


async def test_an_older_snapshot_never_undoes_a_newer_consent(engine: AsyncEngine, store_id: str) -> None:
    await upsert(
        engine, store_id, snapshot(False, T - timedelta(hours=1)), snapshot(True, T - timedelta(hours=2))
    )
    assert await held(engine, store_id) == (False, T - timedelta(hours=1), None)
    # The same instant: the withdrawal stays.
    await upsert(engine, store_id, snapshot(True, T - timedelta(hours=1)))
    assert (await held(engine, store_id))[0] is False
    # An undated snapshot does not replace a dated consent.
    await upsert(engine, store_id, snapshot(True, None))
    assert (await held(engine, store_id))[0] is False
    # A newer grant does.
    await upsert(engine, store_id, snapshot(True, T))
    assert await held(engine, store_id) == (True, T, None)


async def test_our_unsubscribe_survives_any_snapshot(engine: AsyncEngine, store_id: str) -> None:
    await upsert(engine, store_id, snapshot(True, T - timedelta(days=2)))
    async with engine.begin() as conn:
        await conn.execute(
            update(customers)
            .where(customers.c.store_id == store_id, customers.c.customer_id == "c1")
            .values(unsubscribed_at=T - timedelta(days=1))
        )
    await upsert(
        engine, store_id, snapshot(True, T - timedelta(days=3)), snapshot(True, T - timedelta(days=2))
    )
    assert await held(engine, store_id) == (True, T - timedelta(days=2), T - timedelta(days=1))


async def test_an_opt_in_at_the_shop_after_our_unsubscribe_wins(engine: AsyncEngine, store_id: str) -> None:
    """One source of truth per customer, the later change wins: subscribing again in the shop (a
    customers/update webhook dated after our unsubscribe) subscribes them again here."""
    await upsert(engine, store_id, snapshot(True, T - timedelta(days=2)))
    async with engine.begin() as conn:
        await conn.execute(
            update(customers)
            .where(customers.c.store_id == store_id, customers.c.customer_id == "c1")
            .values(unsubscribed_at=T - timedelta(days=1))
        )
    # The shop repeating our own withdrawal (dated at our unsubscribe) changes nothing.
    await upsert(engine, store_id, snapshot(False, T - timedelta(days=1)))
    assert await held(engine, store_id) == (False, T - timedelta(days=1), T - timedelta(days=1))
    await upsert(engine, store_id, snapshot(True, T))
    assert await held(engine, store_id) == (True, T, None)

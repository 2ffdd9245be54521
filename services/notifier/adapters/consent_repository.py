"""Consent changes on their way to the store's platform (an outbox). The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifier.adapters.tables import consent_changes, customers
from services.notifier.domain.coupon_platforms import consent_platform
from shared.stores import StoreConfig


async def record(
    conn: AsyncConnection,
    store: StoreConfig,
    customer_id: str,
    *,
    subscribed: bool,
    reason: str,
    at: datetime,
) -> bool:
    """Queue a consent change for the store's platform, in the caller's transaction (with the unsubscription
    itself). False when the store has no platform that keeps consent."""
    platform = consent_platform(store)
    if platform is None:
        return False
    await conn.execute(
        consent_changes.insert().values(
            store_id=store.store_id,
            customer_id=customer_id,
            platform=platform.value,
            subscribed=subscribed,
            reason=reason,
            changed_at=at,
            next_attempt_at=at,
        )
    )
    return True


async def take_due(conn: AsyncConnection, now: datetime, limit: int, lease: timedelta) -> list[Any]:
    """Due changes, each leased for `lease` (another instance skips them meanwhile), with the customer's
    email for platforms that look customers up by it."""
    rows = (
        await conn.execute(
            select(consent_changes.c.id)
            .where(consent_changes.c.status == "pending", consent_changes.c.next_attempt_at <= now)
            .order_by(consent_changes.c.next_attempt_at, consent_changes.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    ids = [r.id for r in rows]
    if not ids:
        return []
    await conn.execute(
        update(consent_changes).where(consent_changes.c.id.in_(ids)).values(next_attempt_at=now + lease)
    )
    found = await conn.execute(
        select(consent_changes, customers.c.email)
        .select_from(
            consent_changes.outerjoin(
                customers,
                and_(
                    customers.c.store_id == consent_changes.c.store_id,
                    customers.c.customer_id == consent_changes.c.customer_id,
                ),
            )
        )
        .where(consent_changes.c.id.in_(ids))
        .order_by(consent_changes.c.changed_at, consent_changes.c.id)
    )
    return list(found.all())


async def finish(conn: AsyncConnection, ids: Sequence[int], status: str, error: str | None = None) -> None:
    if ids:
        await conn.execute(
            update(consent_changes)
            .where(consent_changes.c.id.in_(list(ids)))
            .values(status=status, last_error=error, attempts=consent_changes.c.attempts + 1)
        )


async def retry(conn: AsyncConnection, change_id: int, due: datetime, error: str) -> None:
    await conn.execute(
        update(consent_changes)
        .where(consent_changes.c.id == change_id)
        .values(next_attempt_at=due, last_error=error, attempts=consent_changes.c.attempts + 1)
    )


async def for_customer(conn: AsyncConnection, store_id: str, customer_id: str) -> list[Any]:
    rows = await conn.execute(
        select(consent_changes)
        .where(consent_changes.c.store_id == store_id, consent_changes.c.customer_id == customer_id)
        .order_by(consent_changes.c.id)
    )
    return list(rows.all())

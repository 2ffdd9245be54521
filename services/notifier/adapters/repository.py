"""Queries of the notifier. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifier.adapters.tables import customers, messages
from services.notifier.domain.flows import PlannedMessage, Skipped
from shared.funnel_events import ProfileSnapshot


async def upsert_customers(
    conn: AsyncConnection, store_id_snapshots: Iterable[tuple[str, ProfileSnapshot]]
) -> None:
    latest = {(store_id, p.customer_id): p for store_id, p in store_id_snapshots}
    if not latest:
        return
    rows = [
        {
            "store_id": store_id,
            "customer_id": customer_id,
            "email": p.email,
            "accepts_marketing": p.accepts_marketing,
            "stage": p.stage.value,
        }
        for (store_id, customer_id), p in sorted(latest.items())
    ]
    stmt = insert(customers).values(rows)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["store_id", "customer_id"],
            set_={
                "email": stmt.excluded.email,
                "accepts_marketing": stmt.excluded.accepts_marketing,
                "stage": stmt.excluded.stage,
                "updated_at": text("now()"),
            },
        )
    )


def _row(item: PlannedMessage | Skipped, now: datetime) -> dict[str, Any]:
    common = {
        "store_id": item.store_id,
        "customer_id": item.customer_id,
        "flow": item.flow.name,
        "trigger_event_id": item.trigger_event_id,
        "due_at": now,
    }
    if isinstance(item, Skipped):
        return {**common, "status": "skipped", "skip_reason": item.reason, "context": {}}
    return {
        **common,
        "status": "pending",
        "to_address": item.profile.email,
        "context": {"customer": item.profile.model_dump(mode="json")},
    }


async def record_planned(
    conn: AsyncConnection, items: Sequence[PlannedMessage | Skipped], now: datetime
) -> int:
    """Insert each planned or skipped message once; return how many new messages await sending."""
    if not items:
        return 0
    stmt = (
        insert(messages)
        .values([_row(item, now) for item in items])
        .on_conflict_do_nothing(constraint="uq_messages_once")
        .returning(messages.c.status)
    )
    statuses = (await conn.execute(stmt)).scalars().all()
    return sum(1 for s in statuses if s == "pending")


async def claim_due(conn: AsyncConnection, now: datetime, limit: int) -> list[Any]:
    """Move due messages to `sending` and return them. SKIP LOCKED lets several senders share the work."""
    due = (
        select(messages.c.id)
        .where(messages.c.status == "pending", messages.c.due_at <= now)
        .order_by(messages.c.due_at, messages.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(messages)
        .where(messages.c.id.in_(due))
        .values(status="sending", attempts=messages.c.attempts + 1)
        .returning(messages)
    )
    return list((await conn.execute(stmt)).all())


async def mark_sent(conn: AsyncConnection, message_id: int, subject: str, now: datetime) -> None:
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(status="sent", subject=subject, sent_at=now)
    )


async def mark_retry(conn: AsyncConnection, message_id: int, due_at: datetime, error: str) -> None:
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(status="pending", due_at=due_at, last_error=error)
    )


async def mark_failed(conn: AsyncConnection, message_id: int, error: str) -> None:
    await conn.execute(
        update(messages).where(messages.c.id == message_id).values(status="failed", last_error=error)
    )


async def customer_known(conn: AsyncConnection, store_id: str, customer_id: str) -> bool:
    found = await conn.execute(
        select(customers.c.customer_id).where(
            customers.c.store_id == store_id, customers.c.customer_id == customer_id
        )
    )
    return found.first() is not None


async def list_messages(conn: AsyncConnection, store_id: str, customer_id: str) -> list[Any]:
    rows = await conn.execute(
        select(messages)
        .where(messages.c.store_id == store_id, messages.c.customer_id == customer_id)
        .order_by(messages.c.created_at, messages.c.id)
    )
    return list(rows.all())


async def forget_customer(conn: AsyncConnection, store_id: str, customer_id: str | None) -> None:
    """Erasure: remove personal data of one customer (or, with None, of every customer of the store).

    Message rows stay (with flow, status and times) so per-flow counts keep adding up."""
    who_c = [customers.c.store_id == store_id]
    who_m = [messages.c.store_id == store_id]
    if customer_id is not None:
        who_c.append(customers.c.customer_id == customer_id)
        who_m.append(messages.c.customer_id == customer_id)
    await conn.execute(update(customers).where(*who_c).values(email=None, accepts_marketing=None))
    await conn.execute(update(messages).where(*who_m).values(to_address=None, context={}, subject=None))

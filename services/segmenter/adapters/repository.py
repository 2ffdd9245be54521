"""Queries of the segmenter. The caller owns the transaction: every function takes an open connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.tables import outbox, processed_events, profiles, transitions
from services.segmenter.domain.profile import Profile, Transition
from shared.funnel import Health, LoyaltyStage
from shared.funnel_events import FunnelEvent, encode_funnel_event
from shared.kafka import FUNNEL_EVENTS

CustomerKey = tuple[str, str]


async def claim_events(conn: AsyncConnection, events: Sequence[tuple[str, str]]) -> set[str]:
    """Record (event_id, store_id) pairs; return the ids seen for the first time.

    A duplicate changes nothing: this is what makes redelivery harmless.
    """
    if not events:
        return set()
    stmt = (
        insert(processed_events)
        .values([{"event_id": event_id, "store_id": store_id} for event_id, store_id in events])
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(processed_events.c.event_id)
    )
    return set((await conn.execute(stmt)).scalars())


def _profile_from_row(row: Any) -> Profile:
    return Profile(
        store_id=row.store_id,
        customer_id=row.customer_id,
        stage=LoyaltyStage(row.stage),
        health=Health(row.health),
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        phone=row.phone,
        locale=row.locale,
        city=row.city,
        country=row.country,
        timezone=row.timezone,
        accepts_marketing=row.accepts_marketing,
        orders_count=row.orders_count,
        total_spent=Decimal(row.total_spent),
        currency=row.currency,
        first_order_at=row.first_order_at,
        last_order_at=row.last_order_at,
        order_ids=tuple(row.order_ids),
    )


async def load_profiles_for_update(
    conn: AsyncConnection, keys: Iterable[CustomerKey]
) -> dict[CustomerKey, Profile]:
    # Sorted, so two instances locking overlapping customers (during a rebalance) cannot deadlock.
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    stmt = (
        select(profiles)
        .where(tuple_(profiles.c.store_id, profiles.c.customer_id).in_(wanted))
        .order_by(profiles.c.store_id, profiles.c.customer_id)
        .with_for_update()
    )
    rows = (await conn.execute(stmt)).all()
    return {(row.store_id, row.customer_id): _profile_from_row(row) for row in rows}


def _profile_row(profile: Profile) -> dict[str, Any]:
    return {
        "store_id": profile.store_id,
        "customer_id": profile.customer_id,
        "stage": profile.stage.value,
        "health": profile.health.value,
        "email": profile.email,
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "phone": profile.phone,
        "locale": profile.locale,
        "city": profile.city,
        "country": profile.country,
        "timezone": profile.timezone,
        "accepts_marketing": profile.accepts_marketing,
        "orders_count": profile.orders_count,
        "total_spent": profile.total_spent,
        "currency": profile.currency,
        "first_order_at": profile.first_order_at,
        "last_order_at": profile.last_order_at,
        "order_ids": list(profile.order_ids),
    }


async def save_profiles(conn: AsyncConnection, changed: Iterable[Profile]) -> None:
    rows = [_profile_row(p) for p in changed]
    if not rows:
        return
    stmt = insert(profiles).values(rows)
    columns = {c: stmt.excluded[c] for c in rows[0] if c not in ("store_id", "customer_id")}
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["store_id", "customer_id"], set_={**columns, "updated_at": func.now()}
        )
    )


async def add_transitions(
    conn: AsyncConnection, store_customer: Iterable[tuple[Profile, Transition]]
) -> None:
    rows = [
        {
            "store_id": profile.store_id,
            "customer_id": profile.customer_id,
            "from_stage": t.from_stage.value,
            "to_stage": t.to_stage.value,
            "reason": t.reason,
            "event_id": t.event_id,
            "occurred_at": t.occurred_at,
        }
        for profile, t in store_customer
    ]
    if rows:
        await conn.execute(transitions.insert(), rows)


async def add_to_outbox(conn: AsyncConnection, events: Iterable[FunnelEvent]) -> int:
    rows = [
        {"topic": FUNNEL_EVENTS, "key": e.partition_key.encode(), "value": encode_funnel_event(e)}
        for e in events
    ]
    if rows:
        await conn.execute(outbox.insert(), rows)
    return len(rows)


async def get_profile(conn: AsyncConnection, store_id: str, customer_id: str) -> Profile | None:
    row = (
        await conn.execute(
            select(profiles).where(profiles.c.store_id == store_id, profiles.c.customer_id == customer_id)
        )
    ).first()
    return _profile_from_row(row) if row is not None else None


async def get_transitions(conn: AsyncConnection, store_id: str, customer_id: str) -> list[Transition]:
    rows = (
        await conn.execute(
            select(transitions)
            .where(transitions.c.store_id == store_id, transitions.c.customer_id == customer_id)
            .order_by(transitions.c.occurred_at, transitions.c.id)
        )
    ).all()
    return [
        Transition(
            from_stage=LoyaltyStage(r.from_stage),
            to_stage=LoyaltyStage(r.to_stage),
            reason=r.reason,
            occurred_at=r.occurred_at,
            event_id=r.event_id,
        )
        for r in rows
    ]

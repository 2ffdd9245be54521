"""Queries of the segmenter. The caller owns the transaction: every function takes an open connection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.tables import (
    copurchases,
    identities,
    orders,
    outbox,
    processed_events,
    profiles,
    timers,
    transitions,
)
from services.segmenter.domain.profile import OrderFact, Profile, Transition
from shared.funnel_events import FunnelEvent, encode_funnel_event
from shared.kafka import FUNNEL_EVENTS

CustomerKey = tuple[str, str]
# Postgres allows 65,535 bind parameters per statement; stay well below with multi-row inserts.
_CHUNK = 2000


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


async def claim_events(conn: AsyncConnection, events: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Record (event_id, store_id) pairs; return the (store_id, event_id) pairs seen for the first time.

    A duplicate changes nothing: this is what makes redelivery harmless.
    """
    claimed: set[tuple[str, str]] = set()
    rows = [{"event_id": event_id, "store_id": store_id} for event_id, store_id in events]
    for chunk in _chunks(rows):
        stmt = (
            insert(processed_events)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["store_id", "event_id"])
            .returning(processed_events.c.store_id, processed_events.c.event_id)
        )
        claimed.update((r.store_id, r.event_id) for r in (await conn.execute(stmt)).all())
    return claimed


async def load_identities(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    stmt = select(identities).where(tuple_(identities.c.store_id, identities.c.identifier).in_(wanted))
    return {(r.store_id, r.identifier): r.customer_id for r in (await conn.execute(stmt)).all()}


async def save_identities(conn: AsyncConnection, rows: dict[tuple[str, str], str]) -> None:
    values = [{"store_id": s, "identifier": i, "customer_id": c} for (s, i), c in sorted(rows.items())]
    for chunk in _chunks(values):
        stmt = insert(identities).values(chunk)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["store_id", "identifier"], set_={"customer_id": stmt.excluded.customer_id}
            )
        )


async def forget_identities(
    conn: AsyncConnection, store_id: str, customer_id: str, *, keep: Sequence[str]
) -> None:
    await conn.execute(
        delete(identities).where(
            identities.c.store_id == store_id,
            identities.c.customer_id == customer_id,
            identities.c.identifier.not_in(list(keep)),
        )
    )


def _profile(row: Any) -> Profile:
    return Profile.model_validate(row.facts)


async def load_profiles_for_update(
    conn: AsyncConnection, keys: Iterable[CustomerKey], *, skip_locked: bool = False
) -> dict[CustomerKey, Profile]:
    # Sorted, so two instances locking overlapping customers (during a rebalance) cannot deadlock.
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    stmt = (
        select(profiles.c.facts)
        .where(tuple_(profiles.c.store_id, profiles.c.customer_id).in_(wanted))
        .order_by(profiles.c.store_id, profiles.c.customer_id)
        .with_for_update(skip_locked=skip_locked)
    )
    found = (_profile(r) for r in (await conn.execute(stmt)).all())
    return {(p.store_id, p.customer_id): p for p in found}


async def load_store_profiles_for_update(conn: AsyncConnection, store_id: str) -> list[Profile]:
    stmt = (
        select(profiles.c.facts)
        .where(profiles.c.store_id == store_id, profiles.c.merged_into.is_(None))
        .order_by(profiles.c.customer_id)
        .with_for_update()
    )
    return [_profile(r) for r in (await conn.execute(stmt)).all()]


def _profile_row(p: Profile) -> dict[str, Any]:
    return {
        "store_id": p.store_id,
        "customer_id": p.customer_id,
        "stage": p.stage.value,
        "health": p.health.value,
        "email": p.email,
        "orders_count": p.orders_count,
        "total_spent": p.total_spent,
        "first_order_at": p.first_order_at,
        "last_order_at": p.last_order_at,
        "survey_level": p.survey_level.value,
        "merged_into": p.merged_into,
        "facts": p.model_dump(mode="json"),
    }


async def save_profiles(conn: AsyncConnection, changed: Iterable[Profile]) -> None:
    rows = [_profile_row(p) for p in changed]
    for chunk in _chunks(rows):
        stmt = insert(profiles).values(chunk)
        columns = {c: stmt.excluded[c] for c in chunk[0] if c not in ("store_id", "customer_id")}
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["store_id", "customer_id"], set_=columns)
        )


async def save_orders(conn: AsyncConnection, changed: Iterable[Profile]) -> None:
    # Keyed by order id: should two sources of one store reuse an id, the last profile written wins here
    # rather than failing the batch.
    by_key = {
        (p.store_id, o.order_id): {
            "store_id": p.store_id,
            "order_id": o.order_id,
            "customer_id": p.customer_id,
            "placed_at": o.placed_at,
            "total": o.total,
            "refunded": o.refunded,
            "counts": o.counts,
        }
        for p in changed
        for o in p.orders
    }
    for chunk in _chunks(list(by_key.values())):
        stmt = insert(orders).values(chunk)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["store_id", "order_id"],
                set_={
                    c: stmt.excluded[c] for c in ("customer_id", "placed_at", "total", "refunded", "counts")
                },
            )
        )


async def add_copurchases(conn: AsyncConnection, new_orders: Iterable[tuple[str, OrderFact]]) -> None:
    pairs: Counter[tuple[str, str, str]] = Counter()
    titles: dict[tuple[str, str], str | None] = {}
    for store_id, order in new_orders:
        products = {p.product_id: p for p in order.products}
        for a in products:
            for b, other in products.items():
                if a != b:
                    pairs[(store_id, a, b)] += 1
                    titles[(store_id, b)] = other.title
    rows = [
        {"store_id": s, "product_id": a, "other_product_id": b, "orders": n, "title": titles[(s, b)]}
        for (s, a, b), n in sorted(pairs.items())
    ]
    for chunk in _chunks(rows):
        stmt = insert(copurchases).values(chunk)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["store_id", "product_id", "other_product_id"],
                set_={"orders": copurchases.c.orders + stmt.excluded.orders, "title": stmt.excluded.title},
            )
        )


async def add_transitions(conn: AsyncConnection, rows: Iterable[tuple[Profile, Transition]]) -> None:
    values = [
        {
            "store_id": p.store_id,
            "customer_id": p.customer_id,
            "dimension": t.dimension,
            "from_value": t.from_value,
            "to_value": t.to_value,
            "reason": t.reason,
            "event_id": t.event_id,
            "occurred_at": t.occurred_at,
        }
        for p, t in rows
    ]
    for chunk in _chunks(values):
        await conn.execute(transitions.insert(), chunk)


async def apply_timers(conn: AsyncConnection, changes: dict[tuple[str, str, str], datetime | None]) -> None:
    """Set (or move) each timer to its due time; delete those whose due time is None."""
    due = [
        {"store_id": s, "customer_id": c, "kind": k, "due_at": at}
        for (s, c, k), at in sorted(changes.items())
        if at
    ]
    gone = sorted(key for key, at in changes.items() if at is None)
    for chunk in _chunks(due):
        stmt = insert(timers).values(chunk)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["store_id", "customer_id", "kind"], set_={"due_at": stmt.excluded.due_at}
            )
        )
    for start in range(0, len(gone), _CHUNK):
        await conn.execute(
            delete(timers).where(
                tuple_(timers.c.store_id, timers.c.customer_id, timers.c.kind).in_(
                    gone[start : start + _CHUNK]
                )
            )
        )


async def repoint_merged(conn: AsyncConnection, store_id: str, absorbed: str, survivor: str) -> None:
    """Everything recorded under the absorbed customer now belongs to the survivor; histories are kept."""
    for table in (transitions, orders, identities):
        await conn.execute(
            update(table)
            .where(table.c.store_id == store_id, table.c.customer_id == absorbed)
            .values(customer_id=survivor)
        )
    await conn.execute(delete(timers).where(timers.c.store_id == store_id, timers.c.customer_id == absorbed))


async def add_to_outbox(conn: AsyncConnection, events: Iterable[FunnelEvent]) -> int:
    rows = [
        {"topic": FUNNEL_EVENTS, "key": e.partition_key.encode(), "value": encode_funnel_event(e)}
        for e in events
    ]
    for chunk in _chunks(rows):
        await conn.execute(outbox.insert(), chunk)
    return len(rows)


async def claim_due_timers(conn: AsyncConnection, now: datetime, limit: int) -> list[Any]:
    """Due timers, locked; SKIP LOCKED lets several instances fire timers without waiting on each other."""
    stmt = (
        select(timers)
        .where(timers.c.due_at <= now)
        .order_by(timers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await conn.execute(stmt)).all())


async def next_timer_due(conn: AsyncConnection) -> datetime | None:
    due: datetime | None = (
        await conn.execute(select(timers.c.due_at).order_by(timers.c.due_at).limit(1))
    ).scalar()
    return due


# -- reads for the API ------------------------------------------------------------------------------------


async def get_profile(conn: AsyncConnection, store_id: str, customer_id: str) -> Profile | None:
    """A customer by id, by a merged-away id, or by any identifier ("anon:..", "email:..")."""
    key = customer_id
    for _ in range(5):  # follow merges; a chain is never long
        row = (
            await conn.execute(
                select(profiles.c.facts, profiles.c.merged_into).where(
                    profiles.c.store_id == store_id, profiles.c.customer_id == key
                )
            )
        ).first()
        if row is None:
            mapped = (
                await conn.execute(
                    select(identities.c.customer_id).where(
                        identities.c.store_id == store_id, identities.c.identifier == key
                    )
                )
            ).scalar()
            if mapped is None:
                return None
            key = mapped
            continue
        if row.merged_into is None:
            return Profile.model_validate(row.facts)
        key = row.merged_into
    return None


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
            dimension=r.dimension,
            from_value=r.from_value,
            to_value=r.to_value,
            reason=r.reason,
            occurred_at=r.occurred_at,
            event_id=r.event_id,
        )
        for r in rows
    ]

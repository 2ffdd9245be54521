"""Queries of the retargeting audiences. The caller owns the transaction.

Lock order, everywhere: a customer's `customers` row first, then their audience rows. The processor holds
the customers rows it just upserted when it calls refresh_memberships; the worker locks them (SKIP LOCKED)
before re-evaluating. So two refreshes of one customer never interleave, and never deadlock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifier.adapters import raw_sql
from services.notifier.adapters.audience_rows import facts_from_row
from services.notifier.adapters.tables import (
    audience_members,
    audience_reevaluations,
    audience_sync_batches,
    customers,
)
from services.notifier.domain.audiences import CustomerFacts, MemberRow, membership_changes
from shared.audience_rules import AudienceDefinition
from shared.events import SHOP_WIDE
from shared.stores import StoreConfig

# Keeps each statement's bind parameters well under PostgreSQL's 32,767.
_CHUNK = 1000

_FACT_COLUMNS = (
    customers.c.customer_id,
    customers.c.email,
    customers.c.phone,
    customers.c.accepts_marketing,
    customers.c.unsubscribed_at,
    customers.c.stage,
    customers.c.health,
    customers.c.profile,
    customers.c.last_order_at,
    customers.c.last_cart_abandoned_at,
)


async def refresh_memberships(
    conn: AsyncConnection, store: StoreConfig, customer_ids: Collection[str], now: datetime
) -> None:
    """Recompute these customers' membership of every audience of the store from their customers rows,
    record what the sync endpoint must be told, and when time alone will change a membership.

    Call it in the transaction that changed the customers rows. A customer without a row, or erased, leaves
    every audience; one who lost marketing consent stays a member but is no longer exportable, and the sync
    endpoint hears of their removal. SHOP_WIDE among the ids (a shop-wide erasure) re-evaluates every
    customer of the store."""
    definitions = store.audiences.active()
    sync_on = store.audiences.sync is not None
    if SHOP_WIDE in customer_ids:
        async for every in _every_customer(conn, store.store_id):
            await _refresh_chunk(conn, store.store_id, definitions, sync_on, every, now)
        return
    ids = sorted(set(customer_ids))
    for chunk in _chunks(ids):
        await _refresh_chunk(conn, store.store_id, definitions, sync_on, chunk, now)


async def _every_customer(conn: AsyncConnection, store_id: str) -> AsyncIterator[list[str]]:
    after = ""
    while True:
        rows = await conn.execute(
            select(customers.c.customer_id)
            .where(customers.c.store_id == store_id, customers.c.customer_id > after)
            .order_by(customers.c.customer_id)
            .limit(_CHUNK)
        )
        chunk = list(rows.scalars())
        if not chunk:
            return
        yield chunk
        after = chunk[-1]


async def _refresh_chunk(
    conn: AsyncConnection,
    store_id: str,
    definitions: Mapping[str, AudienceDefinition],
    sync_on: bool,
    ids: Sequence[str],
    now: datetime,
) -> None:
    # Straight to asyncpg (adapters/raw_sql.py): run for every funnel-event batch, these three reads were
    # the planner's most expensive statements through SQLAlchemy (its IN lists rendered a bind per customer).
    stores, customer_ids = [store_id] * len(ids), list(ids)
    facts = {
        row["customer_id"]: facts_from_row(row)
        for row in await raw_sql.fetch(conn, _FACTS_SQL, stores, customer_ids)
    }
    existing: dict[str, dict[str, MemberRow]] = {}
    for row in await raw_sql.fetch(conn, _MEMBERS_SQL, stores, customer_ids):
        existing.setdefault(row["customer_id"], {})[row["audience"]] = _member_row(row)
    timers = {
        row["customer_id"]: row["due_at"]
        for row in await raw_sql.fetch(conn, _TIMERS_SQL, stores, customer_ids)
    }

    upserts: list[tuple[str, str, MemberRow]] = []
    removals: list[tuple[str, str]] = []
    due: list[dict[str, Any]] = []
    not_due: list[str] = []
    for customer_id in ids:
        changes = membership_changes(
            definitions, facts.get(customer_id), existing.get(customer_id, {}), sync_on=sync_on, now=now
        )
        upserts.extend((audience, customer_id, row) for audience, row in changes.upserts.items())
        removals.extend((audience, customer_id) for audience in changes.removals)
        due_at = changes.reevaluate_at
        if due_at is None and customer_id in timers:
            not_due.append(customer_id)
        elif due_at is not None and timers.get(customer_id) != due_at:
            due.append({"store_id": store_id, "customer_id": customer_id, "due_at": due_at})

    if upserts:
        # Straight to asyncpg, a parameter array per column (raw_sql.unnest_insert), rows in the order the
        # executemany had them: SQLAlchemy processed a bind per value and the rows' dicts for every batch.
        rows = [row for _, _, row in upserts]
        await raw_sql.execute(
            conn,
            _UPSERT_MEMBERS_SQL,
            [store_id] * len(rows),
            [audience for audience, _, _ in upserts],
            [customer_id for _, customer_id, _ in upserts],
            [row.member for row in rows],
            [row.joined_at for row in rows],
            [row.expires_at for row in rows],
            # JSONB(none_as_null=True): no contact is SQL NULL, not JSON null.
            [None if row.contact is None else json.dumps(dict(row.contact)) for row in rows],
            [row.sync_pending for row in rows],
        )
    if removals:
        await conn.execute(
            delete(audience_members).where(
                audience_members.c.store_id == store_id,
                tuple_(audience_members.c.audience, audience_members.c.customer_id).in_(removals),
            )
        )
    if due:
        stmt_due = insert(audience_reevaluations)
        await conn.execute(
            stmt_due.on_conflict_do_update(
                index_elements=["store_id", "customer_id"], set_={"due_at": stmt_due.excluded.due_at}
            ),
            due,
        )
    if not_due:
        await conn.execute(
            delete(audience_reevaluations).where(
                audience_reevaluations.c.store_id == store_id,
                audience_reevaluations.c.customer_id.in_(not_due),
            )
        )


def _upsert_members() -> str:
    stmt = insert(audience_members)
    return raw_sql.unnest_insert(
        audience_members,
        (
            "store_id",
            "audience",
            "customer_id",
            "member",
            "joined_at",
            "expires_at",
            "contact",
            "sync_pending",
        ),
        stmt.on_conflict_do_update(
            index_elements=["store_id", "audience", "customer_id"],
            set_={
                "member": stmt.excluded.member,
                "joined_at": stmt.excluded.joined_at,
                "expires_at": stmt.excluded.expires_at,
                "contact": stmt.excluded.contact,
                "sync_pending": stmt.excluded.sync_pending,
                "updated_at": func.now(),
            },
        ),
    )


_UPSERT_MEMBERS_SQL = _upsert_members()
# A chunk's customers are distinct (refresh_memberships), so each pair is asked once.
_FACTS_SQL = raw_sql.of_customers(
    customers, [c.name for c in _FACT_COLUMNS], tail="ORDER BY t.customer_id FOR UPDATE OF t"
)
_MEMBERS_SQL = raw_sql.of_customers(
    audience_members,
    [c.name for c in audience_members.c],
    tail="ORDER BY t.customer_id, t.audience FOR UPDATE OF t",
)
_TIMERS_SQL = raw_sql.of_customers(audience_reevaluations, ["customer_id", "due_at"])


def _member_row(row: Any) -> MemberRow:
    """An audience_members row (an asyncpg Record) as the domain sees it."""
    return MemberRow(
        member=row["member"],
        joined_at=row["joined_at"],
        expires_at=row["expires_at"],
        contact=row["contact"],
        sync_pending=row["sync_pending"],
        synced_contact=row["synced_contact"],
        in_flight=row["sync_batch_id"] is not None,
    )


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


# --- Reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudienceCounts:
    size: int = 0
    exportable: int = 0


async def audience_counts(conn: AsyncConnection, store_id: str) -> dict[str, AudienceCounts]:
    m = audience_members.c
    rows = await conn.execute(
        select(
            m.audience,
            func.count().filter(m.member),
            func.count().filter(m.member, m.contact.is_not(None)),
        )
        .where(m.store_id == store_id)
        .group_by(m.audience)
    )
    return {audience: AudienceCounts(size, exportable) for audience, size, exportable in rows}


async def exportable_members(
    conn: AsyncConnection,
    store_id: str,
    audience: str,
    *,
    partition: int = 1000,
    after: str | None = None,
    limit: int | None = None,
) -> AsyncIterator[list[CustomerFacts]]:
    """The members of an audience who may be exported, in partitions, read through a server-side cursor so
    a million members never sit in memory. Consent is checked on the customers row itself, as it is now.
    In customer id order: `after` (a customer id) and `limit` read one page of them."""
    m, c = audience_members.c, customers.c
    stmt = (
        select(*_FACT_COLUMNS)
        .select_from(
            audience_members.join(customers, (c.store_id == m.store_id) & (c.customer_id == m.customer_id))
        )
        .where(
            m.store_id == store_id,
            m.audience == audience,
            m.member,
            m.contact.is_not(None),
            c.accepts_marketing.is_(true()),
            c.unsubscribed_at.is_(None),
            *([m.customer_id > after] if after is not None else []),
        )
        .order_by(m.customer_id)
        .limit(limit)
        .execution_options(yield_per=partition)
    )
    result = await conn.stream(stmt)
    async for rows in result.partitions(partition):
        yield [facts_from_row(row._mapping) for row in rows]


# --- Time-based re-evaluation -------------------------------------------------------------------------------


async def due_reevaluations(conn: AsyncConnection, now: datetime, limit: int) -> list[tuple[str, str]]:
    r = audience_reevaluations.c
    rows = await conn.execute(
        select(r.store_id, r.customer_id).where(r.due_at <= now).order_by(r.due_at).limit(limit)
    )
    return [(row.store_id, row.customer_id) for row in rows]


async def lock_customers(conn: AsyncConnection, store_id: str, customer_ids: Sequence[str]) -> list[str]:
    """Lock these customers rows, skipping those another transaction holds (the processor is updating them
    and re-evaluates them itself)."""
    rows = await conn.execute(
        select(customers.c.customer_id)
        .where(customers.c.store_id == store_id, customers.c.customer_id.in_(customer_ids))
        .order_by(customers.c.customer_id)
        .with_for_update(skip_locked=True)
    )
    return list(rows.scalars())


async def drop_reevaluations(conn: AsyncConnection, store_id: str) -> None:
    """A store no longer in the registry: nothing to re-evaluate for it."""
    await conn.execute(delete(audience_reevaluations).where(audience_reevaluations.c.store_id == store_id))


# --- Push sync ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingMember:
    customer_id: str
    contact: dict[str, str] | None  # what the endpoint should have
    synced_contact: dict[str, str] | None  # what it has


@dataclass(frozen=True)
class DueBatch:
    batch_id: str
    store_id: str
    audience: str
    body: bytes
    added: int
    removed: int
    attempts: int


async def mark_pending_for_sync(conn: AsyncConnection, store_id: str) -> int:
    """When sync is switched on (or the endpoint changed), members never pushed become pending."""
    m = audience_members.c
    result = await conn.execute(
        update(audience_members)
        .where(
            m.store_id == store_id,
            m.sync_pending.is_(False),
            m.sync_batch_id.is_(None),
            m.contact.is_distinct_from(m.synced_contact),
        )
        .values(sync_pending=True)
    )
    return result.rowcount


async def audiences_pending_sync(conn: AsyncConnection, store_ids: Collection[str]) -> dict[str, list[str]]:
    """Each of these stores' audiences with members waiting to be pushed (by store id), in one query: asked
    store by store, a thousand syncing stores made two hundred queries a second with nothing pending."""
    m = audience_members.c
    rows = await conn.execute(
        select(m.store_id, m.audience)
        .where(m.store_id.in_(list(store_ids)), m.sync_pending)
        .group_by(m.store_id, m.audience)
        .order_by(m.store_id, m.audience)
    )
    pending: dict[str, list[str]] = {}
    for store_id, audience in rows:
        pending.setdefault(store_id, []).append(audience)
    return pending


async def lock_pending_members(
    conn: AsyncConnection, store_id: str, audience: str, limit: int
) -> list[PendingMember]:
    """Pending members of one audience, locked; another instance building a batch skips them."""
    m = audience_members.c
    rows = await conn.execute(
        select(m.customer_id, m.contact, m.synced_contact)
        .where(m.store_id == store_id, m.audience == audience, m.sync_pending)
        .order_by(m.customer_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [PendingMember(r.customer_id, r.contact, r.synced_contact) for r in rows]


async def record_batch(
    conn: AsyncConnection,
    *,
    batch_id: str,
    store_id: str,
    audience: str,
    body: bytes,
    customer_ids: Sequence[str],
    added: int,
    removed: int,
    now: datetime,
) -> None:
    """Store the batch and put its members in flight: their contact as sent waits for the endpoint's 2xx."""
    await conn.execute(
        insert(audience_sync_batches).values(
            batch_id=batch_id,
            store_id=store_id,
            audience=audience,
            body=body.decode(),
            added=added,
            removed=removed,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    m = audience_members.c
    for chunk in _chunks(customer_ids):
        await conn.execute(
            update(audience_members)
            .where(m.store_id == store_id, m.audience == audience, m.customer_id.in_(chunk))
            .values(inflight_contact=m.contact, sync_batch_id=batch_id, sync_pending=False)
        )


async def claim_due_batch(
    conn: AsyncConnection, store_ids: Collection[str], now: datetime, lease_until: datetime
) -> DueBatch | None:
    """Take the oldest due batch for delivery; until lease_until no other instance takes it (a crash
    mid-delivery makes it due again then, and the receiver dedupes on batch_id)."""
    b = audience_sync_batches.c
    due = (
        select(b.batch_id)
        .where(b.status == "pending", b.next_attempt_at <= now, b.store_id.in_(list(store_ids)))
        .order_by(b.next_attempt_at, b.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = (
        await conn.execute(
            update(audience_sync_batches)
            .where(b.batch_id == due)
            .values(next_attempt_at=lease_until, attempts=b.attempts + 1)
            .returning(b.batch_id, b.store_id, b.audience, b.body, b.added, b.removed, b.attempts)
        )
    ).first()
    if row is None:
        return None
    return DueBatch(
        row.batch_id, row.store_id, row.audience, row.body.encode(), row.added, row.removed, row.attempts
    )


async def complete_batch(conn: AsyncConnection, batch: DueBatch, now: datetime) -> None:
    """The endpoint answered 2xx: what the batch said is now what the endpoint has."""
    b, m = audience_sync_batches.c, audience_members.c
    await conn.execute(
        update(audience_sync_batches)
        .where(b.batch_id == batch.batch_id)
        .values(status="delivered", delivered_at=now, body=None, last_error=None)
    )
    settled = await conn.execute(
        update(audience_members)
        .where(m.sync_batch_id == batch.batch_id)
        .values(
            synced_contact=m.inflight_contact,
            inflight_contact=None,
            sync_batch_id=None,
            sync_pending=m.contact.is_distinct_from(m.inflight_contact),
        )
        .returning(m.customer_id)
    )
    # Former members the endpoint has now removed need no row any more.
    for chunk in _chunks(list(settled.scalars())):
        await conn.execute(
            delete(audience_members).where(
                m.store_id == batch.store_id,
                m.audience == batch.audience,
                m.customer_id.in_(chunk),
                m.member.is_(False),
                m.synced_contact.is_(None),
                m.sync_batch_id.is_(None),
                m.sync_pending.is_(False),
            )
        )


async def retry_batch_later(
    conn: AsyncConnection, batch: DueBatch, next_attempt_at: datetime, error: str
) -> None:
    b = audience_sync_batches.c
    await conn.execute(
        update(audience_sync_batches)
        .where(b.batch_id == batch.batch_id)
        .values(next_attempt_at=next_attempt_at, last_error=error[:2000])
    )

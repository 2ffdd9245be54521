"""Queries of the segmenter. The caller owns the transaction: every function takes an open connection.

The write path of a batch is one statement per table whatever the batch size: rows travel as arrays
(`unnest`), so the statement text never changes, Postgres plans it once per connection, and a batch of
1,000 events costs a dozen round trips instead of a multi-row VALUES list compiled anew each time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.tables import (
    identities,
    profiles,
    timers,
    transitions,
)
from services.segmenter.domain.profile import OrderFact, Profile, Transition
from shared.funnel_events import FunnelEvent, encode_funnel_event
from shared.kafka import FUNNEL_EVENTS

CustomerKey = tuple[str, str]


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows -> one list per column: what `unnest` takes."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


_CLAIM = text(
    "INSERT INTO segmenter.processed_events (store_id, event_id) "
    "SELECT * FROM unnest(CAST(:store_ids AS text[]), CAST(:event_ids AS text[])) "
    "ON CONFLICT (store_id, event_id) DO NOTHING RETURNING store_id, event_id"
)


async def claim_events(conn: AsyncConnection, events: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Record (event_id, store_id) pairs; return the (store_id, event_id) pairs seen for the first time.

    A duplicate changes nothing: this is what makes redelivery harmless.
    """
    if not events:
        return set()
    # A second copy inside the batch would make ON CONFLICT see one key twice in one statement.
    unique = list(dict.fromkeys((store_id, event_id) for event_id, store_id in events))
    store_ids, event_ids = _columns(unique, 2)
    result = await conn.execute(_CLAIM, {"store_ids": store_ids, "event_ids": event_ids})
    return {(r.store_id, r.event_id) for r in result}


_LOAD_IDENTITIES = text(
    "SELECT i.store_id, i.identifier, i.customer_id FROM segmenter.identities i "
    "JOIN unnest(CAST(:store_ids AS text[]), CAST(:identifiers AS text[])) AS w(store_id, identifier) "
    "ON i.store_id = w.store_id AND i.identifier = w.identifier"
)


async def load_identities(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    store_ids, identifiers = _columns(wanted, 2)
    result = await conn.execute(_LOAD_IDENTITIES, {"store_ids": store_ids, "identifiers": identifiers})
    return {(r.store_id, r.identifier): r.customer_id for r in result}


_SAVE_IDENTITIES = text(
    "INSERT INTO segmenter.identities (store_id, identifier, customer_id) "
    "SELECT * FROM unnest(CAST(:store_ids AS text[]), CAST(:identifiers AS text[]), "
    "CAST(:customer_ids AS text[])) "
    "ON CONFLICT (store_id, identifier) DO UPDATE SET customer_id = excluded.customer_id"
)


async def save_identities(conn: AsyncConnection, rows: dict[tuple[str, str], str]) -> None:
    if not rows:
        return
    store_ids, identifiers, customer_ids = _columns([(s, i, c) for (s, i), c in sorted(rows.items())], 3)
    await conn.execute(
        _SAVE_IDENTITIES, {"store_ids": store_ids, "identifiers": identifiers, "customer_ids": customer_ids}
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
    # The document as text, validated straight from JSON: no dict in between.
    return Profile.model_validate_json(row.facts)


_LOAD_PROFILES = (
    "SELECT p.facts::text AS facts FROM segmenter.profiles p "
    "JOIN unnest(CAST(:store_ids AS text[]), CAST(:customer_ids AS text[])) AS w(store_id, customer_id) "
    "ON p.store_id = w.store_id AND p.customer_id = w.customer_id "
    "ORDER BY p.store_id, p.customer_id FOR UPDATE OF p"
)
_LOAD_PROFILES_LOCKED = text(_LOAD_PROFILES)
_LOAD_PROFILES_SKIP_LOCKED = text(_LOAD_PROFILES + " SKIP LOCKED")


async def load_profiles_for_update(
    conn: AsyncConnection, keys: Iterable[CustomerKey], *, skip_locked: bool = False
) -> dict[CustomerKey, Profile]:
    # Sorted, so two instances locking overlapping customers (during a rebalance) cannot deadlock.
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    store_ids, customer_ids = _columns(wanted, 2)
    stmt = _LOAD_PROFILES_SKIP_LOCKED if skip_locked else _LOAD_PROFILES_LOCKED
    result = await conn.execute(stmt, {"store_ids": store_ids, "customer_ids": customer_ids})
    found = (_profile(r) for r in result)
    return {(p.store_id, p.customer_id): p for p in found}


async def load_store_profiles_for_update(conn: AsyncConnection, store_id: str) -> list[Profile]:
    stmt = (
        select(profiles.c.facts.cast(Text).label("facts"))
        .where(profiles.c.store_id == store_id, profiles.c.merged_into.is_(None))
        .order_by(profiles.c.customer_id)
        .with_for_update()
    )
    return [_profile(r) for r in (await conn.execute(stmt)).all()]


_SAVE_PROFILES = text(
    "INSERT INTO segmenter.profiles (store_id, customer_id, stage, health, email, orders_count, total_spent, "
    "first_order_at, last_order_at, survey_level, merged_into, facts) "
    "SELECT store_id, customer_id, stage, health, email, orders_count, total_spent, first_order_at, "
    "last_order_at, survey_level, merged_into, facts::jsonb FROM unnest(CAST(:store_ids AS text[]), "
    "CAST(:customer_ids AS text[]), CAST(:stages AS text[]), CAST(:healths AS text[]), "
    "CAST(:emails AS text[]), CAST(:orders_counts AS integer[]), CAST(:total_spents AS numeric[]), "
    "CAST(:first_order_ats AS timestamptz[]), CAST(:last_order_ats AS timestamptz[]), "
    "CAST(:survey_levels AS text[]), CAST(:merged_intos AS text[]), CAST(:facts AS text[])) "
    "AS r(store_id, customer_id, stage, health, email, orders_count, total_spent, first_order_at, "
    "last_order_at, survey_level, merged_into, facts) "
    "ON CONFLICT (store_id, customer_id) DO UPDATE SET stage = excluded.stage, health = excluded.health, "
    "email = excluded.email, orders_count = excluded.orders_count, total_spent = excluded.total_spent, "
    "first_order_at = excluded.first_order_at, last_order_at = excluded.last_order_at, "
    "survey_level = excluded.survey_level, merged_into = excluded.merged_into, facts = excluded.facts"
)
_PROFILE_COLUMNS = (
    "store_ids", "customer_ids", "stages", "healths", "emails", "orders_counts", "total_spents",
    "first_order_ats", "last_order_ats", "survey_levels", "merged_intos", "facts",
)  # fmt: skip


def _profile_row(p: Profile) -> tuple[Any, ...]:
    counted = p.counted_orders  # sorted once for the three projections that need it
    return (
        p.store_id,
        p.customer_id,
        p.stage.value,
        p.health.value,
        p.email,
        len(counted),
        p.total_spent,
        counted[0].placed_at if counted else None,
        counted[-1].placed_at if counted else None,
        p.survey_level.value,
        p.merged_into,
        p.model_dump_json(),
    )


async def save_profiles(conn: AsyncConnection, changed: Iterable[Profile]) -> None:
    rows = [_profile_row(p) for p in changed]
    if rows:
        columns = _columns(rows, len(_PROFILE_COLUMNS))
        await conn.execute(_SAVE_PROFILES, dict(zip(_PROFILE_COLUMNS, columns, strict=True)))


_SAVE_ORDERS = text(
    "INSERT INTO segmenter.orders (store_id, order_id, customer_id, placed_at, total, refunded, counts) "
    "SELECT * FROM unnest(CAST(:store_ids AS text[]), CAST(:order_ids AS text[]), "
    "CAST(:customer_ids AS text[]), CAST(:placed_ats AS timestamptz[]), CAST(:totals AS numeric[]), "
    "CAST(:refundeds AS numeric[]), CAST(:counts AS boolean[])) "
    "ON CONFLICT (store_id, order_id) DO UPDATE SET customer_id = excluded.customer_id, "
    "placed_at = excluded.placed_at, total = excluded.total, refunded = excluded.refunded, "
    "counts = excluded.counts"
)


async def save_orders(conn: AsyncConnection, changed: Iterable[tuple[Profile, Iterable[OrderFact]]]) -> None:
    """Upsert these orders of these profiles (the order rows are a projection of the profiles' facts)."""
    # Keyed by order id: should two sources of one store reuse an id, the last profile written wins here
    # rather than failing the batch.
    by_key = {
        (p.store_id, o.order_id): (
            p.store_id,
            o.order_id,
            p.customer_id,
            o.placed_at,
            o.total,
            o.refunded,
            o.counts,
        )
        for p, held in changed
        for o in held
    }
    if not by_key:
        return
    names = ("store_ids", "order_ids", "customer_ids", "placed_ats", "totals", "refundeds", "counts")
    columns = _columns(list(by_key.values()), len(names))
    await conn.execute(_SAVE_ORDERS, dict(zip(names, columns, strict=True)))


_ADD_COPURCHASES = text(
    "INSERT INTO segmenter.copurchases (store_id, product_id, other_product_id, orders, title) "
    "SELECT * FROM unnest(CAST(:store_ids AS text[]), CAST(:product_ids AS text[]), "
    "CAST(:other_product_ids AS text[]), CAST(:orders AS integer[]), CAST(:titles AS text[])) "
    "ON CONFLICT (store_id, product_id, other_product_id) DO UPDATE "
    "SET orders = segmenter.copurchases.orders + excluded.orders, title = excluded.title"
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
    if not pairs:
        return
    rows = [(s, a, b, n, titles[(s, b)]) for (s, a, b), n in sorted(pairs.items())]
    names = ("store_ids", "product_ids", "other_product_ids", "orders", "titles")
    await conn.execute(_ADD_COPURCHASES, dict(zip(names, _columns(rows, len(names)), strict=True)))


_ADD_TRANSITIONS = text(
    "INSERT INTO segmenter.transitions (store_id, customer_id, dimension, from_value, to_value, reason, "
    "event_id, occurred_at) "
    "SELECT store_id, customer_id, dimension, from_value, to_value, reason, event_id, occurred_at "
    "FROM unnest(CAST(:store_ids AS text[]), CAST(:customer_ids AS text[]), "
    "CAST(:dimensions AS text[]), CAST(:from_values AS text[]), CAST(:to_values AS text[]), "
    "CAST(:reasons AS text[]), CAST(:event_ids AS text[]), CAST(:occurred_ats AS timestamptz[])) "
    "WITH ORDINALITY AS r(store_id, customer_id, dimension, from_value, to_value, reason, event_id, "
    "occurred_at, n) ORDER BY n"
    # In the order given, so ids (which break ties in a customer's history) follow the events.
)
_TRANSITION_NAMES = (
    "store_ids", "customer_ids", "dimensions", "from_values", "to_values", "reasons", "event_ids",
    "occurred_ats",
)  # fmt: skip


async def add_transitions(conn: AsyncConnection, rows: Iterable[tuple[Profile, Transition]]) -> None:
    values = [
        (
            p.store_id,
            p.customer_id,
            t.dimension,
            t.from_value,
            t.to_value,
            t.reason,
            t.event_id,
            t.occurred_at,
        )
        for p, t in rows
    ]
    if values:
        columns = _columns(values, len(_TRANSITION_NAMES))
        await conn.execute(_ADD_TRANSITIONS, dict(zip(_TRANSITION_NAMES, columns, strict=True)))


_SET_TIMERS = text(
    "INSERT INTO segmenter.timers (store_id, customer_id, kind, due_at) "
    "SELECT * FROM unnest(CAST(:store_ids AS text[]), CAST(:customer_ids AS text[]), "
    "CAST(:kinds AS text[]), CAST(:due_ats AS timestamptz[])) "
    "ON CONFLICT (store_id, customer_id, kind) DO UPDATE SET due_at = excluded.due_at"
)
_DELETE_TIMERS = text(
    "DELETE FROM segmenter.timers t USING unnest(CAST(:store_ids AS text[]), CAST(:customer_ids AS text[]), "
    "CAST(:kinds AS text[])) AS g(store_id, customer_id, kind) "
    "WHERE t.store_id = g.store_id AND t.customer_id = g.customer_id AND t.kind = g.kind"
)


async def apply_timers(conn: AsyncConnection, changes: dict[tuple[str, str, str], datetime | None]) -> None:
    """Set (or move) each timer to its due time; delete those whose due time is None."""
    due = [(s, c, k, at) for (s, c, k), at in sorted(changes.items()) if at]
    gone = sorted(key for key, at in changes.items() if at is None)
    if due:
        store_ids, customer_ids, kinds, due_ats = _columns(due, 4)
        await conn.execute(
            _SET_TIMERS,
            {"store_ids": store_ids, "customer_ids": customer_ids, "kinds": kinds, "due_ats": due_ats},
        )
    if gone:
        store_ids, customer_ids, kinds = _columns(gone, 3)
        await conn.execute(
            _DELETE_TIMERS, {"store_ids": store_ids, "customer_ids": customer_ids, "kinds": kinds}
        )


def _final_owners(merges: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """(store, customer) -> who owns its rows once the merges are applied one after another, in order:
    rows an earlier merge moved into a customer move on with it when that customer is absorbed later."""
    owner: dict[tuple[str, str], str] = {}
    for store_id, absorbed, survivor in merges:
        for key, current in owner.items():
            if key[0] == store_id and current == absorbed:
                owner[key] = survivor
        owner[(store_id, absorbed)] = survivor
    return owner


_REPOINT = {
    table: text(
        f"UPDATE segmenter.{table} t SET customer_id = m.survivor "  # noqa: S608 - table names are ours
        "FROM unnest(CAST(:store_ids AS text[]), CAST(:absorbed AS text[]), CAST(:survivors AS text[])) "
        "AS m(store_id, absorbed, survivor) WHERE t.store_id = m.store_id AND t.customer_id = m.absorbed"
    )
    for table in ("transitions", "orders", "identities")
}
_DROP_ABSORBED_TIMERS = text(
    "DELETE FROM segmenter.timers t USING unnest(CAST(:store_ids AS text[]), CAST(:absorbed AS text[])) "
    "AS m(store_id, absorbed) WHERE t.store_id = m.store_id AND t.customer_id = m.absorbed"
)


async def repoint_merged(conn: AsyncConnection, merges: Sequence[tuple[str, str, str]]) -> None:
    """Everything recorded under each absorbed customer (store, absorbed, survivor) now belongs to its
    survivor; histories are kept. One statement per table for all the merges of a batch."""
    if not merges:
        return
    rows = [(s, a, c) for (s, a), c in _final_owners(merges).items()]
    store_ids, absorbed, survivors = _columns(rows, 3)
    params = {"store_ids": store_ids, "absorbed": absorbed, "survivors": survivors}
    for statement in _REPOINT.values():
        await conn.execute(statement, params)
    await conn.execute(_DROP_ABSORBED_TIMERS, {"store_ids": store_ids, "absorbed": absorbed})


_ADD_TO_OUTBOX = text(
    "INSERT INTO segmenter.outbox (topic, key, value) "
    "SELECT CAST(:topic AS text), key, value FROM unnest(CAST(:keys AS bytea[]), CAST(:values AS bytea[])) "
    "WITH ORDINALITY AS r(key, value, n) ORDER BY n"
)


async def add_to_outbox(conn: AsyncConnection, events: Iterable[FunnelEvent]) -> int:
    keys: list[bytes] = []
    values: list[bytes] = []
    for e in events:
        keys.append(e.partition_key.encode())
        values.append(encode_funnel_event(e))
    if keys:
        # In the order given: the relay publishes by id, and one customer's events must keep their order.
        await conn.execute(_ADD_TO_OUTBOX, {"topic": FUNNEL_EVENTS, "keys": keys, "values": values})
    return len(keys)


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

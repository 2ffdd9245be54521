"""Queries of the segmenter. The caller owns the transaction: every function takes an open connection.

The write path of a batch is one statement per table whatever the batch size: rows travel as arrays
(`unnest`, see unnest.py), so a batch of 1,000 events costs a dozen round trips.

A batch's statements after its first go straight to asyncpg (shared/raw_sql.py), not through SQLAlchemy's
execute. The first, the claim, stays on SQLAlchemy: it begins the transaction, and a kept connection found
dead there is replaced at once (shared/kept_connection.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

import msgspec
from pydantic import BaseModel
from sqlalchemy import Integer, Text, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.profile_cache import ProfileCache
from services.segmenter.adapters.tables import (
    copurchases,
    forgotten_identities,
    identities,
    orders,
    outbox,
    processed_events,
    profiles,
    timers,
    transitions,
)
from services.segmenter.adapters.unnest import (
    Positional,
    array,
    as_blobs,
    blob,
    encoded_blob,
    insert_rows,
    joined,
    joined_values,
    literal,
    params,
    positional,
    unnest,
)
from services.segmenter.domain.figures import counted, survey_level, total_spent
from services.segmenter.domain.identity import FORGETTABLE
from services.segmenter.domain.profile import OrderFact, Profile, Transition
from shared.funnel_event_structs import FunnelEvent, encode_funnel_event_into
from shared.kafka import FUNNEL_EVENTS
from shared.raw_sql import fetch

CustomerKey = tuple[str, str]

_SECOND = itemgetter(1)


def in_lock_order(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """`sorted(keys)`: (store, id) pairs in the order the statements take their rows' locks in. A batch's
    keys are nearly always of one store, and then the ids alone are compared: as strings, which CPython's
    sort compares by memcmp, instead of a rich comparison of each pair's store ids and then of its ids
    (1,900 identities of one store: 642 -> 249 us; in process, best of 7)."""
    listed = list(keys)
    if listed:
        store = listed[0][0]
        for s, _ in listed:
            if s != store:
                return sorted(listed)
    return sorted(listed, key=_SECOND)


async def _run(conn: AsyncConnection, statement: Positional, values: dict[str, Any]) -> list[Any]:
    return await fetch(conn, statement.sql, *statement.args(values))


@dataclass(frozen=True, slots=True)
class Write:
    """One write statement of a batch with its rows already built (and its documents encoded): preparing is
    the client's CPU, `send` the database's work, so a caller can prepare the next write while this one runs
    (service_layer/write_set.py)."""

    statement: Positional
    values: dict[str, Any]

    async def send(self, conn: AsyncConnection) -> None:
        await _run(conn, self.statement, self.values)


def together(writes: Sequence[Write]) -> Write | None:
    """These writes as one statement (`unnest.joined`): one round trip instead of one each. Each part sees
    the rows as they stood when the statement began, so only for writes none of which needs rows another
    one writes (each to a table of its own: service_layer/write_set.py)."""
    if len(writes) < 2:
        return writes[0] if writes else None
    return Write(joined(tuple(w.statement for w in writes)), joined_values([w.values for w in writes]))


_CLAIMED = ("store_id", "event_id")
_INSERT_CLAIMS = insert_rows(
    processed_events, _CLAIMED, "ON CONFLICT (store_id, event_id) DO NOTHING RETURNING store_id, event_id"
)
# The keys inserted, as before, unless every key of the batch was (the usual batch): then one row of NULLs
# says so, instead of the batch's 3,000 keys coming back through SQLAlchemy's result rows one by one. A
# stored key is never NULL (primary key), so that row cannot be a key. In process, over 3,000-event claims:
# the client's CPU 1.76 -> 0.8 us an event, PostgreSQL's unchanged (answering with the keys it did not
# insert instead, an EXCEPT, cost PostgreSQL 0.5 us an event more).
_CLAIM = text(
    f"WITH claimed AS ({_INSERT_CLAIMS.text}), counted AS (SELECT count(*) AS n FROM claimed) "  # noqa: S608
    f"SELECT store_id, event_id FROM claimed, counted WHERE n < cardinality({array('store_id', 'text')}) "
    f"UNION ALL SELECT NULL, NULL FROM counted WHERE n = cardinality({array('store_id', 'text')})"
)


async def claim_events(conn: AsyncConnection, events: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Record (event_id, store_id) pairs; return the (store_id, event_id) pairs seen for the first time.

    A duplicate changes nothing: this is what makes redelivery harmless.
    """
    if not events:
        return set()
    # A second copy inside the batch would make ON CONFLICT see one key twice in one statement.
    unique = list(dict.fromkeys((store_id, event_id) for event_id, store_id in events))
    rows = (await conn.execute(_CLAIM, params(_CLAIMED, unique))).all()
    if len(rows) == 1 and rows[0][0] is None:  # every key was new
        return set(unique)
    return {(r[0], r[1]) for r in rows}


_IDENTITY_KEY = ("store_id", "identifier")


def _forgettable(column: str) -> str:
    """SQL: the identifier in `column` is of a kind an erasure forgets (`FORGETTABLE`)."""
    return " OR ".join(f"{column} LIKE '{prefix}%'" for prefix in FORGETTABLE)


# A batch's look-ups and, of its emails and anonymous ids that no look-up knows (a new customer's, nearly
# always), those an erasure forgot: one statement, one round trip.
#
# One probe of the primary key per pair, whatever the table's statistics say. As a plain join, PostgreSQL
# hashed a live batch's pairs and read the whole table for each batch (4-7 ms a batch of 50-100 events at
# 1,000 events/s, its costliest statement): the statistics were those of the table before it grew. A probe
# costs about the same at any size of the table, where a store's table of millions would be read whole for
# every batch. Each probe searches for the pair itself (the equalities): replaying the benchmark's mix, the
# look-ups took 1.06-1.24 s in all against 1.73-1.97 when each probe took the first row at or after its
# pair and a filter kept the exact matches (4 alternated replays each). The row comparison stays beside the
# equalities: only the primary key serves it (its two columns in order), and it keeps the planner there
# before the table's first ANALYZE, where the equalities alone took the customer index (the store's column
# alone) and read every identity of the store for each pair (1-2 s a batch of 3,000 events). The LIMITs
# keep the subqueries from being flattened back into joins.
#
# The forgotten look-ups were a second statement, sent once the first had answered with the pairs it did
# not know: a round trip a batch, one of the three reads a batch decided ahead waits for one after another
# (bench/README.md, sixty-eighth round). Here the second probe is made for those pairs only: its conditions
# on the first probe's answer and on the identifier's kind reach no column of the forgotten table, so the
# planner makes them a one-time filter, tested before the probe and its digest (EXPLAIN ANALYZE: the probe
# runs once per unknown email or anonymous id, not once per pair). A pair with neither answer is left out.
# The digest is PostgreSQL's: the text of a forgotten look-up never leaves the statement that forgets it.
_LOAD_IDENTITIES = text(
    "SELECT w.store_id, w.identifier, i.customer_id, f.customer_id, f.erased_at "  # noqa: S608 - our names
    f"FROM {unnest(identities, _IDENTITY_KEY, 'w')} "
    "LEFT JOIN LATERAL (SELECT customer_id FROM segmenter.identities "
    "WHERE store_id = w.store_id AND identifier = w.identifier "
    "AND (store_id, identifier) >= (w.store_id, w.identifier) "
    "ORDER BY store_id, identifier LIMIT 1) i ON true "
    "LEFT JOIN LATERAL (SELECT customer_id, erased_at "
    f"FROM {forgotten_identities.fullname} WHERE i.customer_id IS NULL AND ({_forgettable('w.identifier')}) "
    "AND store_id = w.store_id AND digest = sha256(convert_to(w.identifier, 'UTF8')) LIMIT 1) f ON true "
    "WHERE i.customer_id IS NOT NULL OR f.customer_id IS NOT NULL"
)
_LOAD_IDENTITIES_RAW = positional(_LOAD_IDENTITIES)


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A look-up an erasure forgot: the customer erased, and when."""

    customer_id: str
    erased_at: datetime


@dataclass(frozen=True, slots=True)
class LookedUp:
    """What `load_identities` found: the pairs' customers, and the pairs an erasure forgot among the emails
    and anonymous ids that no look-up knows."""

    identities: dict[tuple[str, str], str]
    forgotten: dict[tuple[str, str], Forgotten]


async def load_identities(conn: AsyncConnection, keys: Iterable[tuple[str, str]]) -> LookedUp:
    # In any order: a plain read, no lock taken, and the answer is a mapping. Sorting a batch's ~5,000
    # (store, identifier) pairs first cost 2.5 ms of the client's CPU a batch of 3,000 events.
    wanted = list(set(keys))
    if not wanted:
        return LookedUp({}, {})
    found: dict[tuple[str, str], str] = {}
    forgotten: dict[tuple[str, str], Forgotten] = {}
    for store_id, identifier, customer_id, erased_id, erased_at in await _run(
        conn, _LOAD_IDENTITIES_RAW, params(_IDENTITY_KEY, wanted)
    ):
        if customer_id is not None:
            found[(store_id, identifier)] = customer_id
        else:
            forgotten[(store_id, identifier)] = Forgotten(erased_id, erased_at)
    return LookedUp(found, forgotten)


_IDENTITY = ("store_id", "identifier", "customer_id")
# A profile's own identifiers go into every write set that holds the profile, mapped as they are stored
# (only the event's were looked up): an update to the same customer would leave a dead version and, on a
# full page, new index entries for nothing. Skipping it leaves the same rows: over 117,000 events of the
# replay mix 16,066 -> 6,201-6,374 updates, the statement's PostgreSQL time 4.19-8.87 -> 3.88-7.77 us an
# event (3 alternated pairs, all lower).
_SAVE_IDENTITIES = insert_rows(
    identities,
    _IDENTITY,
    "ON CONFLICT (store_id, identifier) DO UPDATE SET customer_id = excluded.customer_id "
    "WHERE segmenter.identities.customer_id <> excluded.customer_id",
)
_SAVE_IDENTITIES_RAW = positional(_SAVE_IDENTITIES)


def identities_write(rows: dict[tuple[str, str], str]) -> Write | None:
    if not rows:
        return None
    # The keys sorted, not the items: the same order (keys are unique, so an item's value never decides),
    # without comparing the pairs nested in the items a second time.
    return Write(
        _SAVE_IDENTITIES_RAW, params(_IDENTITY, [(s, i, rows[(s, i)]) for s, i in in_lock_order(rows)])
    )


async def forget_identities(
    conn: AsyncConnection,
    store_id: str,
    customer_id: str,
    erased_at: datetime,
    *,
    keep: Sequence[str],
    also: Sequence[str] = (),
) -> None:
    """The look-ups of an erased customer go, but those it `keep`s (the look-ups of the profiles merged into
    it point to it already: `repoint_write`). Each email or anonymous id among them, and among `also` (named
    by events of the customer's from before the erasure, or by profiles merged into it, that no look-up held),
    is remembered by its digest, with the customer and the erasure's time."""
    await conn.execute(
        _FORGET_IDENTITIES,
        {
            "store_id": store_id,
            "customer_id": customer_id,
            "erased_at": erased_at,
            "keep": list(keep),
            "also": list(also),
        },
    )


_FORGET_IDENTITIES = text(
    "WITH gone AS ("  # noqa: S608 - our own names
    f"DELETE FROM {identities.fullname} i WHERE i.store_id = :store_id AND i.customer_id = :customer_id "
    "AND i.identifier <> ALL(CAST(:keep AS text[])) RETURNING i.identifier), "
    "named AS (SELECT identifier FROM gone UNION SELECT unnest(CAST(:also AS text[]))) "
    f"INSERT INTO {forgotten_identities.fullname} AS f (store_id, digest, customer_id, erased_at) "
    "SELECT :store_id, sha256(convert_to(identifier, 'UTF8')), :customer_id, :erased_at FROM named "
    f"WHERE {_forgettable('identifier')} "
    "ON CONFLICT (store_id, digest) DO UPDATE SET customer_id = excluded.customer_id, "
    "erased_at = excluded.erased_at WHERE f.erased_at < excluded.erased_at"
)


def _profile(facts: str) -> Profile:
    # The document as text, validated straight from JSON: no dict in between.
    return Profile.model_validate_json(facts)


_PROFILE_KEY = ("store_id", "customer_id")
# The transaction's id (what the rows it writes will have as xmin), the first id not yet assigned when
# the statement began (every writer whose row it can see has a smaller one) and which server this is.
_WHO_AND_WHEN = (
    "SELECT pg_current_xact_id()::text AS xid, pg_snapshot_xmax(pg_current_snapshot())::text AS horizon, "
    "pg_postmaster_start_time()::text AS server"
)
_VERSIONED = (
    "SELECT p.store_id, p.customer_id, p.xmin::text AS xmin, s.xid, s.horizon, s.server, "  # noqa: S608
    "CASE WHEN p.xmin::text = w.xmin THEN NULL ELSE p.facts::text END AS facts "
    f"FROM segmenter.profiles p JOIN unnest({array('store_id', 'text')}, {array('customer_id', 'text')}, "
    f"{array('xmin', 'text')}) AS w(store_id, customer_id, xmin) "
    "ON p.store_id = w.store_id AND p.customer_id = w.customer_id "
    f"CROSS JOIN ({_WHO_AND_WHEN}) s"
)
_LOAD_VERSIONED = _VERSIONED + " ORDER BY p.store_id, p.customer_id FOR UPDATE OF p"
_LOAD_VERSIONED_LOCKED = positional(_LOAD_VERSIONED)
_LOAD_VERSIONED_SKIP_LOCKED = positional(_LOAD_VERSIONED + " SKIP LOCKED")
_READ_VERSIONED = positional(_VERSIONED)
_LOAD_FACTS = positional(
    "SELECT p.facts::text AS facts FROM segmenter.profiles p "  # noqa: S608 - our own names
    f"JOIN {unnest(profiles, _PROFILE_KEY, 'w')} "
    "ON p.store_id = w.store_id AND p.customer_id = w.customer_id"
)
_CURRENT_XID = positional(_WHO_AND_WHEN)


@dataclass(frozen=True)
class Writer:
    """A transaction that writes rows: its 64-bit id and the server it runs on (its start time)."""

    xid: int
    server: str


@dataclass
class LoadedProfiles:
    """Profiles read (locked for update, unless said otherwise), each row's version (its `xmin`) and the
    reading transaction (None when no row was found)."""

    profiles: dict[CustomerKey, Profile]
    writer: Writer | None
    versions: dict[CustomerKey, str]


async def load_profiles_with_versions(
    conn: AsyncConnection, keys: Iterable[CustomerKey], cache: ProfileCache, *, skip_locked: bool = False
) -> LoadedProfiles:
    """The profiles of `keys` that have a row, each row locked for update (or, with `skip_locked`, left out
    when another transaction holds it), taking from `cache` each profile whose row still holds the version the
    cache remembers: PostgreSQL sends such a row's document as NULL and it is not parsed again."""
    # Not sorted here: the statement's ORDER BY is the order its FOR UPDATE locks the rows in (the rows are
    # locked as they leave the sort), which is what keeps two instances from deadlocking.
    statement = _LOAD_VERSIONED_SKIP_LOCKED if skip_locked else _LOAD_VERSIONED_LOCKED
    return await _versioned(conn, statement, keys, cache)


async def read_profiles_with_versions(
    conn: AsyncConnection, keys: Iterable[CustomerKey], cache: ProfileCache
) -> LoadedProfiles:
    """`load_profiles_with_versions` without the locks: what the rows hold now, and their versions, for a
    caller that locks them later and checks that they still hold those versions (`relock_profiles`)."""
    return await _versioned(conn, _READ_VERSIONED, keys, cache)


def _keys_and_versions(keys: list[CustomerKey], versions: list[str | None]) -> dict[str, str]:
    """The versioned read's parameters: each key with the version its row is expected to hold (or None)."""
    return {
        "store_id": literal([k[0] for k in keys]),
        "customer_id": literal([k[1] for k in keys]),
        "xmin": literal(versions),
    }


async def _versioned(
    conn: AsyncConnection, statement: Positional, keys: Iterable[CustomerKey], cache: ProfileCache
) -> LoadedProfiles:
    wanted = list(set(keys))
    if not wanted:
        return LoadedProfiles({}, None, {})
    result = await _run(conn, statement, _keys_and_versions(wanted, cache.versions(wanted)))
    found: dict[CustomerKey, Profile | None] = {}
    versions: dict[CustomerKey, str] = {}
    writer: Writer | None = None
    for store_id, customer_id, xmin, xid, horizon, server, facts in result:
        key = (store_id, customer_id)
        versions[key] = xmin
        if writer is None:
            writer = Writer(int(xid), server)
        if facts is not None:
            found[key] = _profile(facts)
        else:
            found[key] = cache.hit(key, xmin, int(horizon), server)
    unread = in_lock_order(k for k, p in found.items() if p is None)
    if unread:  # a remembered version the cache no longer trusts: read the document after all
        for r in await _run(conn, _LOAD_FACTS, params(_PROFILE_KEY, unread)):
            p = _profile(r[0])
            found[(p.store_id, p.customer_id)] = p
    profiles = {k: p for k, p in found.items() if p is not None}
    return LoadedProfiles(profiles, writer, versions)


async def relock_profiles(
    conn: AsyncConnection, keys: Iterable[CustomerKey], versions: dict[CustomerKey, str]
) -> tuple[bool, Writer | None]:
    """Lock the rows of `keys` (as `load_profiles_with_versions` does, in the same order) and say whether
    they still hold `versions`: each row there has the version given for it, and no key without a version
    has a row. Only the versions come back, no document. With the transaction (None when no row was found)."""
    wanted = list(set(keys))
    if not wanted:
        return True, None
    expected = [versions.get(k) for k in wanted]
    rows = await _run(conn, _LOAD_VERSIONED_LOCKED, _keys_and_versions(wanted, expected))
    writer = Writer(int(rows[0][3]), rows[0][5]) if rows else None
    # A row holds its version when its document comes back NULL (the statement's CASE): a row with another
    # version, or one where none was expected, comes back with its document; a row gone, not at all.
    present = len(expected) - expected.count(None)
    same = len(rows) == present and all(r[6] is None for r in rows)
    return same, writer


async def current_writer(conn: AsyncConnection) -> Writer:
    """The connection's transaction (the xmin of the rows it writes is the low 32 bits of its id)."""
    (row,) = await _run(conn, _CURRENT_XID, {})
    return Writer(int(row["xid"]), row["server"])


async def load_store_profiles_for_update(conn: AsyncConnection, store_id: str) -> list[Profile]:
    stmt = (
        select(profiles.c.facts.cast(Text).label("facts"))
        .where(profiles.c.store_id == store_id, profiles.c.merged_into.is_(None))
        .order_by(profiles.c.customer_id)
        .with_for_update()
    )
    return [_profile(r.facts) for r in (await conn.execute(stmt)).all()]


# The ids merged into these customers, at any depth (A into B, then B into C: both are C's), by the partial
# index on merged_into (migration 0003). Read only for the rare batch that erases a customer or meets one
# erased, so that their erasure reaches what they absorbed.
_LOAD_MERGED_INTO = positional(
    "WITH RECURSIVE absorbed(store_id, customer_id, merged_into) AS ("  # noqa: S608 - our own names
    " SELECT p.store_id, p.customer_id, p.merged_into FROM segmenter.profiles p"
    f" JOIN {unnest(profiles, _PROFILE_KEY, 'w')}"
    " ON p.store_id = w.store_id AND p.merged_into = w.customer_id"
    " UNION"
    " SELECT p.store_id, p.customer_id, p.merged_into FROM segmenter.profiles p"
    " JOIN absorbed a ON p.store_id = a.store_id AND p.merged_into = a.customer_id)"
    " SELECT store_id, customer_id, merged_into FROM absorbed"
)


async def load_merged_into(conn: AsyncConnection, keys: Iterable[CustomerKey]) -> list[tuple[str, str, str]]:
    """(store, absorbed id, the customer it was merged into) for every profile merged, directly or through
    others, into one of these customers."""
    wanted = in_lock_order(set(keys))
    if not wanted:
        return []
    rows = await _run(conn, _LOAD_MERGED_INTO, params(_PROFILE_KEY, wanted))
    return [(r["store_id"], r["customer_id"], r["merged_into"]) for r in rows]


_PROFILE = (
    "store_id", "customer_id", "stage", "health", "email", "orders_count", "total_spent", "first_order_at",
    "last_order_at", "survey_level", "merged_into", "facts",
)  # fmt: skip
_SAVE_PROFILES = insert_rows(
    profiles,
    _PROFILE,
    "ON CONFLICT (store_id, customer_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _PROFILE if c not in _PROFILE_KEY),
)
_SAVE_PROFILES_RAW = positional(_SAVE_PROFILES)
(_PROFILE_DOCUMENT,) = as_blobs(profiles, _PROFILE)  # the documents
_PROFILE_COLUMNS = tuple(c for c in _PROFILE if c != _PROFILE_DOCUMENT)  # `_profile_row`'s, in its order


def _fields(model: object) -> dict[str, Any]:
    if isinstance(model, BaseModel):
        return model.__dict__
    raise TypeError(f"cannot encode {type(model).__name__}")


# The profile document written by msgspec, its models taken field by field (every field, None included, as
# `model_dump_json()` wrote it): the same JSON values, so the same jsonb (test_segmenter_profile_json.py),
# for 3.2 us a profile instead of pydantic's 7.6 (in process, 6,000 profiles of the replay mix).
_PROFILE_JSON = msgspec.json.Encoder(enc_hook=_fields, decimal_format="string")


_NO_ORDERS: tuple[int, Decimal, None, None] = (0, Decimal("0"), None, None)  # figures without orders


def _profile_row(p: Profile) -> tuple[Any, ...]:
    # The figures by figures.py's functions, which the properties of the same names call: each property is
    # one more interpreted call, through its descriptor, once a profile written (see figures.order_counts).
    orders = p.orders
    if orders:
        counted_orders = counted(orders)  # sorted once for the three projections that need it
        count, spent = len(counted_orders), total_spent(orders)
        first = counted_orders[0].placed_at if counted_orders else None
        last = counted_orders[-1].placed_at if counted_orders else None
    else:
        # Four in five profiles a batch writes have no order (browsing, carts): their figures are constants,
        # without the two properties' calls and the sum's new Decimal.
        count, spent, first, last = _NO_ORDERS
    # The stage, health and survey level as they are: StrEnum members are strings holding their values,
    # which asyncpg writes as any string (`.value` went through enum's descriptor, ~0.4 us each).
    return (
        p.store_id,
        p.customer_id,
        p.stage,
        p.health,
        p.email,
        count,
        spent,
        first,
        last,
        survey_level(p),
        p.merged_into,
    )


def profiles_write(changed: Iterable[Profile]) -> Write | None:
    written = list(changed)
    if not written:
        return None
    # The columns but the document as literals; the documents' UTF-8 JSON written into their blob.
    values = params(_PROFILE_COLUMNS, [_profile_row(p) for p in written])
    documents = encoded_blob(_PROFILE_DOCUMENT, written, _PROFILE_JSON.encode_into)
    return Write(_SAVE_PROFILES_RAW, values | documents)


_ORDER = ("store_id", "order_id", "customer_id", "placed_at", "total", "refunded", "counts")
_SAVE_ORDERS = insert_rows(
    orders,
    _ORDER,
    "ON CONFLICT (store_id, order_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _ORDER[2:]),
)
_SAVE_ORDERS_RAW = positional(_SAVE_ORDERS)


def orders_write(changed: Iterable[tuple[Profile, Iterable[OrderFact]]]) -> Write | None:
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
        return None
    return Write(_SAVE_ORDERS_RAW, params(_ORDER, list(by_key.values())))


_COPURCHASE = ("store_id", "product_id", "other_product_id", "orders", "title")
_ADD_COPURCHASES = insert_rows(
    copurchases,
    _COPURCHASE,
    "ON CONFLICT (store_id, product_id, other_product_id) DO UPDATE "
    "SET orders = segmenter.copurchases.orders + excluded.orders, title = excluded.title",
)
_ADD_COPURCHASES_RAW = positional(_ADD_COPURCHASES)


def copurchases_write(bought: Iterable[tuple[str, OrderFact, int]]) -> Write | None:
    """Add each order's pairs of products to the counts of products bought together (`sign` -1 takes back
    those of a version an edit replaced)."""
    pairs: Counter[tuple[str, str, str]] = Counter()
    titles: dict[tuple[str, str], str | None] = {}
    for store_id, order, sign in bought:
        products = {p.product_id: p for p in order.products}
        for a in products:
            for b, other in products.items():
                if a != b:
                    pairs[(store_id, a, b)] += sign
                    if sign > 0 or (store_id, b) not in titles:
                        titles[(store_id, b)] = other.title
    rows = [(s, a, b, n, titles[(s, b)]) for (s, a, b), n in sorted(pairs.items()) if n]
    if not rows:
        return None
    return Write(_ADD_COPURCHASES_RAW, params(_COPURCHASE, rows))


def _probed(table: str, keys: str, match: str, *, carried: str = "") -> str:
    """`(SELECT [carried,] r.ctid AS row FROM <keys> CROSS JOIN LATERAL (<the rows of `table` where `match`>)
    r)`: the rows of `table` that each of `keys` names, found by one index probe a key, to be joined to the
    table by `ctid` (a TID scan a row), with what `carried` takes of their key.

    Why not a plain join of the keys with the table: a new store's tables grow by tens of thousands of rows
    before their first automatic ANALYZE, and planned from the statistics of their first moments the join
    was a hash of the keys and a sequential scan of the whole table for every batch (custom plans do not
    help: they use the same statistics). OFFSET 0 keeps the subquery from being flattened back into that
    join; the TID join then stays a probe. Its cost grows with the batch's keys, not with the table.

    Joined by `ctid`, a row updated by another transaction after this statement began would be skipped
    where a join on the key would re-check the new version and take it. No other transaction changes these
    rows while this one runs: they are the rows of customers whose profiles this transaction holds locked
    (a batch's or a timer round's), and whoever writes a customer's rows holds its profile's lock."""
    selected = f"{carried}, r.ctid" if carried else "r.ctid"
    return (
        f"(SELECT {selected} AS row FROM {keys} "  # noqa: S608 - our own names
        f"CROSS JOIN LATERAL (SELECT ctid FROM segmenter.{table} WHERE {match} OFFSET 0) r)"
    )


def _deleting(table: str, keys: str, match: str) -> str:
    """The DELETE of the rows of `table` that each of `keys` names, probed (`_probed`)."""
    return f"DELETE FROM segmenter.{table} t USING {_probed(table, keys, match)} d WHERE t.ctid = d.row"  # noqa: S608


_TRANSITION = (
    "store_id", "customer_id", "dimension", "from_value", "to_value", "reason", "event_id", "occurred_at",
)  # fmt: skip
# In the order given, so ids (which break ties in a customer's history) follow the history.
_ADD_TRANSITIONS = insert_rows(transitions, _TRANSITION, ordered=True)


# One statement for both steps (`unnest.chained`): the DELETE sees the rows as they stood when the statement
# began, never the ones it inserts (the table has no unique key but its identity column), so it is the old
# DELETE followed by the old INSERT, in one round trip. The old rows are found by a probe of the customer
# index each (`_probed`): as a join, a batch's keys were a merge join that read and sorted the whole table,
# growing with it. Replaying the benchmark's mix in batches of 3,000 events, the statement (with its INSERT)
# took 13-17 ms a batch at the median against 40-43, 0.9-1.1 s in all against 2.4-2.8 (four alternated
# replays each). Migration 0005 keeps the store's time index from serving the probes.
_REPLACE_HISTORIES_RAW = positional(
    _deleting(
        "transitions",
        f"unnest({array('gone_store_id', 'text')}, {array('gone_customer_id', 'text')}) "
        "AS g(store_id, customer_id)",
        "store_id = g.store_id AND customer_id = g.customer_id",
    ),
    _ADD_TRANSITIONS,
)


def histories_write(changed: Iterable[Profile]) -> Write | None:
    """Each profile's transition rows become its history: a history is derived from the facts, so a late
    fact may re-date or remove a step as well as add one. An absorbed profile's rows go (its survivor's
    history holds them)."""
    profiles = list(changed)
    if not profiles:
        return None
    keys = in_lock_order({(p.store_id, p.customer_id) for p in profiles})
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
        for p in profiles
        if p.merged_into is None
        for t in p.transitions
    ]
    gone = params(("gone_store_id", "gone_customer_id"), keys)
    return Write(_REPLACE_HISTORIES_RAW, {**gone, **params(_TRANSITION, values)})


_TIMER = ("store_id", "customer_id", "kind", "due_at")
_SET_TIMERS = insert_rows(
    timers, _TIMER, "ON CONFLICT (store_id, customer_id, kind) DO UPDATE SET due_at = excluded.due_at"
)


# Timers set (or moved) and timers deleted, in one statement: a key is never both (one due time per key),
# so the two parts touch different rows. The deleted ones are found by a probe of the primary key each.
_APPLY_TIMERS_RAW = positional(
    _deleting(
        "timers",
        f"unnest({array('gone_store_id', 'text')}, {array('gone_customer_id', 'text')}, "
        f"{array('gone_kind', 'text')}) AS g(store_id, customer_id, kind)",
        "store_id = g.store_id AND customer_id = g.customer_id AND kind = g.kind",
    ),
    _SET_TIMERS,
)


def timers_write(changes: dict[tuple[str, str, str], datetime | None]) -> Write | None:
    """Set (or move) each timer to its due time; delete those whose due time is None."""
    due = [(s, c, k, at) for s, c, k in sorted(changes) if (at := changes[(s, c, k)])]  # as identities_write
    gone = sorted(key for key, at in changes.items() if at is None)
    if not (due or gone):
        return None
    return Write(
        _APPLY_TIMERS_RAW,
        {**params(_TIMER, due), **params(("gone_store_id", "gone_customer_id", "gone_kind"), gone)},
    )


def final_owners(merges: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """(store, customer) -> who owns its rows once the merges are applied one after another, in order:
    rows an earlier merge moved into a customer move on with it when that customer is absorbed later."""
    owner: dict[tuple[str, str], str] = {}
    # (store, customer) -> the keys whose rows it owns now: a merge moves that set on at once. Scanning every
    # owner for each merge instead was quadratic in the merges: about 4.7 million instructions a call for a
    # batch of 3,000 events of the benchmark's mix (about 190 merges), over 1 % of the segmenter's own.
    owned: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for store_id, absorbed, survivor in merges:
        moved = owned.pop((store_id, absorbed), set())
        key = (store_id, absorbed)
        was = owner.get(key)
        if was is not None and (held := owned.get((store_id, was))) is not None:
            held.discard(key)  # absorbed before: it no longer moves with its earlier survivor
        for k in moved:
            owner[k] = survivor
        owner[key] = survivor
        moved.add(key)
        owned.setdefault((store_id, survivor), set()).update(moved)
    return owner


# The rows of each absorbed customer of `m` (`_probed`). Replaying the benchmark's mix in batches of 3,000
# events, the joins' four sequential scans took 18-22 ms a batch at the median and up to 259 ms, for a few
# hundred absorbed ids that mostly held no rows at all; the probes 3-4 ms (two alternated replays each).
# Before migration 0005, the first batches' probes of transitions could take the store's time index instead
# of the customer's (up to 85 ms a batch).
_ABSORBED = "store_id = m.store_id AND customer_id = m.absorbed"


# Everything of the absorbed customers moves to their survivors in one statement: each part changes rows
# of its own table, and all of them see the rows as they stood when it began, as the four statements did
# one after another.
_MOVES = ", ".join(
    f"{table} AS (UPDATE segmenter.{table} t SET customer_id = x.survivor "  # noqa: S608 - ours
    f"FROM {_probed(table, 'm', _ABSORBED, carried='m.survivor')} x WHERE t.ctid = x.row)"
    for table in ("transitions", "orders", "identities")
)
_REPOINT = text(
    f"WITH m AS (SELECT * FROM unnest({array('store_ids', 'text')}, {array('absorbed', 'text')}, "  # noqa: S608
    f"{array('survivors', 'text')}) AS m(store_id, absorbed, survivor)), {_MOVES} "
    + _deleting("timers", "m", _ABSORBED)
)
_REPOINT_RAW = positional(_REPOINT)


def repoint_write(merges: Sequence[tuple[str, str, str]]) -> Write | None:
    """Everything recorded under each absorbed customer (store, absorbed, survivor) now belongs to its
    survivor; histories are kept. One statement for all the merges of a batch."""
    if not merges:
        return None
    rows = [(s, a, c) for (s, a), c in final_owners(merges).items()]
    return Write(_REPOINT_RAW, params(("store_ids", "absorbed", "survivors"), rows))


# A look-up (store, identifier) goes only if it still names the customer given: later in the same batch, an
# event may have given the identifier to another.
_DROP_IDENTITIES = text(
    f"DELETE FROM {identities.fullname} i USING unnest({array('store_ids', 'text')}, "  # noqa: S608 - ours
    f"{array('dropped', 'text')}, {array('owners', 'text')}) AS d(store_id, identifier, customer_id) "
    "WHERE i.store_id = d.store_id AND i.identifier = d.identifier AND i.customer_id = d.customer_id"
)
_DROP_IDENTITIES_RAW = positional(_DROP_IDENTITIES)


def drop_identities_write(
    dropped: Iterable[tuple[str, str, str]], merges: Sequence[tuple[str, str, str]]
) -> Write | None:
    """The look-ups (store, identifier, customer) that a merge left its survivor without (the bound on a
    profile's emails and anonymous ids): after the batch's repointing, which gave them to the survivor's own
    survivor, if it was absorbed later in the batch (`final_owners`)."""
    owners = final_owners(merges)
    rows = sorted((s, i, owners.get((s, c), c)) for s, i, c in dropped)
    if not rows:
        return None
    return Write(_DROP_IDENTITIES_RAW, params(("store_ids", "dropped", "owners"), rows))


_OUTBOX = ("topic", "key", "value")
# In the order given: the relay publishes by id, and one customer's events must keep their order.
_ADD_TO_OUTBOX = insert_rows(outbox, _OUTBOX, ordered=True)
_ADD_TO_OUTBOX_RAW = positional(_ADD_TO_OUTBOX)


def outbox_write(events: Iterable[FunnelEvent]) -> Write | None:
    written = list(events)
    if not written:
        return None
    keys = [e.partition_key.encode() for e in written]
    topics = literal([FUNNEL_EVENTS] * len(keys))
    values = encoded_blob("value", written, encode_funnel_event_into)
    return Write(_ADD_TO_OUTBOX_RAW, {"topic": topics, **blob("key", keys), **values})


# Built once (a round runs every second, and at once again while rounds are full): the same statement, its
# due time and size passed as parameters.
_CLAIM_DUE_TIMERS = (
    select(timers)
    .where(timers.c.due_at <= bindparam("now", type_=timers.c.due_at.type))
    .order_by(timers.c.due_at)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)


async def claim_due_timers(conn: AsyncConnection, now: datetime, limit: int) -> list[Any]:
    """Due timers, locked; SKIP LOCKED lets several instances fire timers without waiting on each other."""
    return list((await conn.execute(_CLAIM_DUE_TIMERS, {"now": now, "limit": limit})).all())


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


async def get_transitions(
    conn: AsyncConnection, store_id: str, customer_id: str, *, limit: int | None = None, offset: int = 0
) -> list[Transition]:
    rows = (
        await conn.execute(
            select(transitions)
            .where(transitions.c.store_id == store_id, transitions.c.customer_id == customer_id)
            .order_by(transitions.c.occurred_at, transitions.c.id)
            .limit(limit)
            .offset(offset)
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

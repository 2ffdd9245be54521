"""Queries of the notifier. The caller owns the transaction."""

from __future__ import annotations

import json
import math
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifier.adapters import raw_sql
from services.notifier.adapters.tables import coupons, customers, messages, orders, products
from services.notifier.domain.coupons import CouponTerms, OpenCoupon, SentMessage, new_code
from services.notifier.domain.delivery import UNCERTAIN, Unsettled
from services.notifier.domain.erasure import KeptAfterErasure
from services.notifier.domain.flows import PlannedMessage, Skipped
from services.notifier.domain.messages import (
    CLAIMED,
    CouponCount,
    FlowCount,
    IssuedCoupon,
    KnownCustomer,
    Message,
    MessageStatus,
    decode_trigger,
)
from shared.funnel import Health, LoyaltyStage
from shared.funnel_events import OrderRecorded, ProfileSnapshot
from shared.notifier_rules import CouponKind

CustomerKey = tuple[str, str]
# What each funnel event refreshes about a customer; the unsubscribe token and the notifier's own facts stay.
_REFRESHED = ("email", "phone", "stage", "health", "profile", "last_order_at")
# First key of the sender's advisory locks (the second is the customer's hash): "LF" + 1.
_SENDER_LOCKS = 0x4C4601


# -- rows into records --------------------------------------------------------------------------------------


def _customer(r: Mapping[Any, Any]) -> KnownCustomer:
    """A customers row: an asyncpg Record or a SQLAlchemy row's _mapping."""
    return KnownCustomer(
        store_id=r["store_id"],
        customer_id=r["customer_id"],
        email=r["email"],
        phone=r["phone"],
        accepts_marketing=r["accepts_marketing"],
        stage=LoyaltyStage(r["stage"]),
        health=Health(r["health"]),
        profile=r["profile"] or {},
        last_order_at=r["last_order_at"],
        last_cart_abandoned_at=r["last_cart_abandoned_at"],
        unsubscribe_token=r["unsubscribe_token"],
        unsubscribed_at=r["unsubscribed_at"],
        suppressed_at=r["suppressed_at"],
        suppressed_reason=r["suppressed_reason"],
    )


def _message(r: Mapping[Any, Any]) -> Message:
    """A messages row: an asyncpg Record or a SQLAlchemy row's _mapping."""
    return Message(
        id=r["id"],
        store_id=r["store_id"],
        customer_id=r["customer_id"],
        flow=r["flow"],
        trigger_event_id=r["trigger_event_id"],
        channel=r["channel"],
        status=MessageStatus(r["status"]),
        skip_reason=r["skip_reason"],
        to_address=r["to_address"],
        trigger=decode_trigger(r["context"].get("trigger") or {}),
        subject=r["subject"],
        due_at=r["due_at"],
        attempts=r["attempts"],
        last_error=r["last_error"],
        created_at=r["created_at"],
        sent_at=r["sent_at"],
        marketing=r["marketing"],
        trigger_at=r["trigger_at"],
        send_before=r["send_before"],
        claimed_at=r["claimed_at"],
        coupon_code=r["coupon_code"],
        converted_at=r["converted_at"],
        converted_order_id=r["converted_order_id"],
        revenue=r["revenue"],
        resent_at=r["resent_at"],
    )


def _coupon(r: Row[Any]) -> IssuedCoupon:
    return IssuedCoupon(
        id=r.id,
        store_id=r.store_id,
        customer_id=r.customer_id,
        flow=r.flow,
        trigger_event_id=r.trigger_event_id,
        message_id=r.message_id,
        code=r.code,
        kind=CouponKind(r.kind),
        value=r.value,
        currency=r.currency,
        issued_at=r.issued_at,
        expires_at=r.expires_at,
        redeemed_at=r.redeemed_at,
        redeemed_order_id=r.redeemed_order_id,
        redeemed_by=r.redeemed_by,
    )


# -- customers ------------------------------------------------------------------------------------------


async def upsert_customers(
    conn: AsyncConnection, store_id_snapshots: Iterable[tuple[str, ProfileSnapshot]]
) -> list[CustomerKey]:
    """The latest snapshot of each customer wins; returns the keys touched (for audiences)."""
    latest = {(store_id, p.customer_id): p for store_id, p in store_id_snapshots}
    if not latest:
        return []
    keys = sorted(latest)
    snapshots = [latest[key] for key in keys]
    # Straight to asyncpg, a parameter array per column (raw_sql.unnest_insert), rows in key order (the order
    # their locks are taken in): SQLAlchemy's executemany cost ~1.9 ms of CPU a batch of ~30 customers.
    await raw_sql.execute(
        conn,
        _UPSERT_CUSTOMERS_SQL,
        [store_id for store_id, _ in keys],
        [customer_id for _, customer_id in keys],
        [p.email for p in snapshots],
        [p.phone for p in snapshots],
        [p.accepts_marketing for p in snapshots],
        [p.consent_at for p in snapshots],
        [p.stage.value for p in snapshots],
        [p.health.value for p in snapshots],
        [snapshot_json(p) for p in snapshots],
        [p.last_order_at for p in snapshots],
        # Only used when the row is new: the token of an existing customer never changes.
        [secrets.token_urlsafe(32) for _ in snapshots],
    )
    return keys


_SNAPSHOT_SERIALIZER = ProfileSnapshot.__pydantic_serializer__


def snapshot_json(snapshot: ProfileSnapshot) -> str:
    """The snapshot as the JSON text stored in `customers.profile` (JSONB): the value
    `json.dumps(snapshot.model_dump(mode="json", exclude_none=True))` gives, written by the model's own
    serializer in one step instead of a dict of JSON types encoded again by `json`: 7.8 -> 4.1 us a snapshot
    over the funnel events of the bench's mix (9 alternated pairs), where planning's client CPU is about
    100 us an event.

    The two spell some values differently but store the same JSONB (test_notifier_snapshot_json):
    non-ASCII characters raw instead of escaped, a float's exponent without "+" or a leading zero ("1e16"
    against "1e+16"). They differ where the serializer writes null for a float that is not finite (the
    contract's decoder takes NaN and Infinity, which `json` writes and PostgreSQL refuses) and where
    PostgreSQL refuses the text (a NUL, whose error quotes the JSON text before it): those take `json`'s
    way, so the stored row, or the error, is what it was."""
    median = snapshot.median_days_between_orders
    if median is None or math.isfinite(median):
        text = _SNAPSHOT_SERIALIZER.to_json(snapshot, exclude_none=True)
        if b"\\u0000" not in text:
            return text.decode()
    return json.dumps(snapshot.model_dump(mode="json", exclude_none=True))


def _newer_consent(incoming: Any) -> dict[str, Any]:
    """Consent is replaced only by a consent said later at the source (its `consent_updated_at`), so a
    funnel event delivered again, or one carrying an older snapshot, cannot undo a withdrawal; at the same
    instant a withdrawal wins. An undated consent replaces only an undated one. Our own unsubscribe
    (`unsubscribed_at`) is undone only by a consent the customer gave at the source after it."""
    held = customers.c.consent_updated_at
    said = incoming.consent_updated_at
    wins = or_(
        held.is_(None),
        and_(
            said.is_not(None),
            or_(said > held, and_(said == held, incoming.accepts_marketing.is_not(true()))),
        ),
    )
    # One source of truth per customer, the later change wins: a customer who opts in again at the shop
    # after unsubscribing from our email (a dated consent later than our unsubscribe) is subscribed again.
    resubscribed = and_(
        incoming.accepts_marketing.is_(true()),
        said.is_not(None),
        customers.c.unsubscribed_at.is_not(None),
        said > customers.c.unsubscribed_at,
    )
    return {
        "accepts_marketing": case((wins, incoming.accepts_marketing), else_=customers.c.accepts_marketing),
        "consent_updated_at": case((wins, said), else_=held),
        "unsubscribed_at": case((resubscribed, None), else_=customers.c.unsubscribed_at),
    }


def _upsert_customers() -> str:
    stmt = insert(customers)
    return raw_sql.unnest_insert(
        customers,
        (
            "store_id",
            "customer_id",
            "email",
            "phone",
            "accepts_marketing",
            "consent_updated_at",
            "stage",
            "health",
            "profile",
            "last_order_at",
            "unsubscribe_token",
        ),
        stmt.on_conflict_do_update(
            index_elements=["store_id", "customer_id"],
            set_={name: getattr(stmt.excluded, name) for name in _REFRESHED}
            | _newer_consent(stmt.excluded)
            | {"updated_at": text("now()")},
        ),
    )


_UPSERT_CUSTOMERS_SQL = _upsert_customers()


async def note_carts_abandoned(conn: AsyncConnection, abandoned: Sequence[tuple[str, str, datetime]]) -> None:
    """Each (store, customer, when) as the customer's latest abandoned cart, unless a later one is noted.

    One statement for a batch's carts, each customer's latest first picked here: `greatest` of the held time
    and that one is what noting them one by one gave, in any order. Straight to asyncpg from one array per
    column: the executemany it replaces (a statement a cart, through SQLAlchemy) was 4.4 % of the notifier's
    busy samples at 1,000 events/s. An erasure in the same batch leaves this column alone, so noting them
    after it changes nothing (the rows are already locked by the batch's upsert of the same customers, so
    the order the UPDATE meets them in takes no new lock)."""
    latest: dict[tuple[str, str], datetime] = {}
    for store_id, customer_id, at in abandoned:
        held = latest.get((store_id, customer_id))
        if held is None or at > held:
            latest[(store_id, customer_id)] = at
    if not latest:
        return
    await raw_sql.execute(
        conn,
        _NOTE_CARTS_ABANDONED_SQL,
        [store_id for store_id, _ in latest],
        [customer_id for _, customer_id in latest],
        list(latest.values()),
    )


_NOTE_CARTS_ABANDONED_SQL = (
    f"UPDATE {customers.fullname} t "  # noqa: S608
    "SET last_cart_abandoned_at = greatest(t.last_cart_abandoned_at, u.at) "
    "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u (store_id, customer_id, at) "
    "WHERE t.store_id = u.store_id AND t.customer_id = u.customer_id"
)


async def customer_known(conn: AsyncConnection, store_id: str, customer_id: str) -> bool:
    found = await conn.execute(
        select(customers.c.customer_id).where(
            customers.c.store_id == store_id, customers.c.customer_id == customer_id
        )
    )
    return found.first() is not None


async def lock_customers(
    conn: AsyncConnection, keys: Iterable[CustomerKey]
) -> dict[CustomerKey, KnownCustomer]:
    """Lock the customers about to be messaged, so the frequency cap is decided by one sender at a time per
    customer, and read their rows.

    Transaction-scoped advisory locks rather than row locks: the consumer upserts these same rows for every
    funnel event, and with `FOR UPDATE` each side waited for the other's transaction. Taken in one order, so
    two senders never deadlock; a hash collision only makes two customers wait for each other."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    await raw_sql.execute(
        conn,
        _LOCK_CUSTOMERS_SQL,
        _SENDER_LOCKS,
        [store_id for store_id, _ in wanted],
        [customer_id for _, customer_id in wanted],
    )
    return {
        (r["store_id"], r["customer_id"]): _customer(r) for r in await _rows_of(conn, _CUSTOMERS_SQL, wanted)
    }


async def _rows_of(
    conn: AsyncConnection, sql: str, wanted: Sequence[CustomerKey], *args: object
) -> list[Any]:
    """The rows of `sql` (raw_sql.of_customers: $1 and $2 the wanted customers' stores and ids, one pair
    each, its other parameters `args`)."""
    return await raw_sql.fetch(
        conn, sql, [store_id for store_id, _ in wanted], [customer_id for _, customer_id in wanted], *args
    )


_LOCK_CUSTOMERS_SQL = (
    "SELECT pg_advisory_xact_lock($1, k) FROM ("
    " SELECT DISTINCT hashtext(s || '/' || c) AS k"
    " FROM unnest($2::text[], $3::text[]) AS u(s, c)"
    " ORDER BY k) AS keys"
)
_CUSTOMERS_SQL = raw_sql.of_customers(customers, [c.name for c in customers.c])


async def suppress(
    conn: AsyncConnection, store_id: str, customer_id: str, reason: str, now: datetime
) -> None:
    await conn.execute(
        update(customers)
        .where(customers.c.store_id == store_id, customers.c.customer_id == customer_id)
        .values(suppressed_at=now, suppressed_reason=reason[:500])
    )


async def customer_by_token(conn: AsyncConnection, token: str) -> KnownCustomer | None:
    found = (await conn.execute(select(customers).where(customers.c.unsubscribe_token == token))).first()
    return _customer(found._mapping) if found is not None else None


async def unsubscribe(conn: AsyncConnection, token: str, now: datetime) -> Any | None:
    """Unsubscribe the token's customer (idempotent: the first time is kept); None for an unknown token."""
    found = await conn.execute(
        update(customers)
        .where(customers.c.unsubscribe_token == token)
        .values(unsubscribed_at=func.coalesce(customers.c.unsubscribed_at, now))
        .returning(customers.c.store_id, customers.c.customer_id, customers.c.unsubscribed_at)
    )
    return found.first()


async def forget_customer(
    conn: AsyncConnection, store_id: str, customer_id: str | None, kept: KeptAfterErasure | None = None
) -> None:
    """Erasure: remove personal data of one customer (or, with None, of every customer of the store).

    Message, coupon and order rows stay (flow, status, amounts and times) so per-flow figures add up.
    `kept`: what the customer said after the erasure (an erasure that reached us late); the messages planned
    since then to an address given since keep theirs. The caller takes the kept details up again."""
    who_c = [customers.c.store_id == store_id]
    who_m = [messages.c.store_id == store_id]
    if customer_id is not None:
        who_c.append(customers.c.customer_id == customer_id)
        who_m.append(messages.c.customer_id == customer_id)
    if kept is not None:
        # Spelled out with IS NULL: a NULL in a NOT (...) would keep the row's address.
        who_m.append(
            or_(
                messages.c.trigger_at.is_(None),
                messages.c.trigger_at <= kept.since,
                messages.c.to_address.is_(None),
                messages.c.to_address.not_in(kept.addresses),
            )
        )
    # Messages first: the sender locks a message before its customer, and the same order here avoids a
    # deadlock between an erasure and a send for the same customer.
    await conn.execute(update(messages).where(*who_m).values(to_address=None, context={}, subject=None))
    await conn.execute(
        update(customers)
        .where(*who_c)
        .values(
            email=None,
            phone=None,
            accepts_marketing=None,
            consent_updated_at=None,
            profile={},
            suppressed_reason=None,
        )
    )


# -- planning ---------------------------------------------------------------------------------------------


async def record_planned(
    conn: AsyncConnection, items: Sequence[PlannedMessage | Skipped], now: datetime
) -> list[tuple[str, MessageStatus]]:
    """Insert each planned or skipped message once; return (flow, status) of the rows that are new."""
    planned = [item for item in items if isinstance(item, PlannedMessage)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    ordered: list[PlannedMessage | Skipped] = [*planned, *skipped]
    if not ordered:
        return []
    # Straight to asyncpg, a parameter array per column (raw_sql.unnest_insert), as SQLAlchemy's executemany
    # of the rows' dicts was, for a third of its client CPU. One statement for both kinds, planned rows
    # first (the order, and so the ids, two statements gave them): a skipped row is given what its columns'
    # defaults gave it when it was a statement of its own (test_notifier_record_planned), and most batches
    # have both kinds, so this is a round trip fewer a batch.
    rows = await raw_sql.fetch(
        conn,
        _RECORD_PLANNED_SQL,
        [m.store_id for m in ordered],
        [m.customer_id for m in ordered],
        [m.flow.value for m in ordered],
        [m.trigger_event_id for m in ordered],
        [MessageStatus.PENDING.value] * len(planned) + [MessageStatus.SKIPPED.value] * len(skipped),
        [None] * len(planned) + [m.reason for m in skipped],
        [m.channel for m in planned] + [SKIPPED_CHANNEL] * len(skipped),
        [m.to_address for m in planned] + [None] * len(skipped),
        [json.dumps({"trigger": m.trigger}) for m in planned] + ["{}"] * len(skipped),
        [m.due_at for m in planned] + [now] * len(skipped),
        [m.marketing for m in planned] + [False] * len(skipped),
        [m.trigger_at for m in planned] + [None] * len(skipped),
        [m.send_before for m in planned] + [None] * len(skipped),
    )
    return [(r["flow"], MessageStatus(r["status"])) for r in rows]


# What a skipped row's `channel` and `marketing` held when its statement left them to their defaults.
SKIPPED_CHANNEL = "email"
_ONCE = (
    insert(messages)
    .on_conflict_do_nothing(constraint="uq_messages_once")
    .returning(messages.c.flow, messages.c.status)
)
_RECORD_PLANNED_SQL = raw_sql.unnest_insert(
    messages,
    (
        "store_id",
        "customer_id",
        "flow",
        "trigger_event_id",
        "status",
        "skip_reason",
        "channel",
        "to_address",
        "context",
        "due_at",
        "marketing",
        "trigger_at",
        "send_before",
    ),
    _ONCE,
)


# -- sending ----------------------------------------------------------------------------------------------


async def due_messages(
    conn: AsyncConnection, now: datetime, limit: int, *, transactional_only: bool = False
) -> list[Message]:
    """Lock due messages; SKIP LOCKED lets several senders share the work without waiting on each other.

    Transactional messages (a welcome, a support alert) come before marketing ones: when the sender falls
    behind, a message the customer is waiting for now goes out first, and a review request planned for a week
    later waits a few seconds more. Within each kind, the longest due first. `transactional_only` leaves the
    marketing ones out (the express sender's share)."""
    # Straight to asyncpg (adapters/raw_sql.py): the sender's per-claim reads through SQLAlchemy cost more
    # client CPU than the rest of deciding a claim.
    query = _DUE_TRANSACTIONAL_SQL if transactional_only else _DUE_SQL
    rows = await raw_sql.fetch(conn, query, now, limit)
    return [_message(r) for r in rows]


_MESSAGE_COLUMNS = ", ".join(c.name for c in messages.c)
_DUE = (
    f"SELECT {_MESSAGE_COLUMNS} FROM {messages.fullname} "  # noqa: S608
    f"WHERE status = '{MessageStatus.PENDING.value}' AND due_at <= $1"
)
_DUE_ORDER = " ORDER BY marketing, due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
_DUE_SQL = _DUE + _DUE_ORDER
_DUE_TRANSACTIONAL_SQL = _DUE + " AND marketing IS false" + _DUE_ORDER


async def due_message(conn: AsyncConnection, message_id: int, now: datetime) -> Message | None:
    """One due message, locked (for deciding the messages of a batch one at a time)."""
    found = await conn.execute(
        select(messages)
        .where(
            messages.c.id == message_id, messages.c.status == MessageStatus.PENDING, messages.c.due_at <= now
        )
        .with_for_update(skip_locked=True)
    )
    row = found.first()
    return _message(row._mapping) if row is not None else None


async def recent_marketing(
    conn: AsyncConnection, keys: Iterable[CustomerKey], since: datetime
) -> dict[CustomerKey, list[tuple[int, datetime]]]:
    wanted = sorted(set(keys))
    found: dict[CustomerKey, list[tuple[int, datetime]]] = defaultdict(list)
    if not wanted:
        return found
    for r in await _rows_of(conn, _RECENT_MARKETING_SQL, wanted, since):
        found[(r["store_id"], r["customer_id"])].append((r["id"], r["claimed_at"]))
    return found


# A message whose fate a crash left unknown may have reached the customer: it counts.
_RECENT_MARKETING_SQL = raw_sql.of_customers(
    messages,
    ["store_id", "customer_id", "id", "claimed_at"],
    f"t.marketing AND t.claimed_at >= $3 AND (t.status IN ({', '.join(repr(str(c.value)) for c in CLAIMED)}) "
    f"OR t.skip_reason = '{UNCERTAIN}')",
)


@dataclass(frozen=True)
class ClaimSlot:
    message_id: int
    coupon_code: str | None
    lane: int
    position: int


async def claim_many(
    conn: AsyncConnection, claim_id: str, slots: Sequence[ClaimSlot], now: datetime, lease_until: datetime
) -> None:
    """`pending` -> `sending` for the batch, each message with its coupon and its place in a lane: one
    statement for the batch."""
    if slots:
        # One UPDATE from parameter arrays, straight to asyncpg, not an executemany through SQLAlchemy.
        await raw_sql.execute(
            conn,
            _CLAIM_MANY_SQL,
            [s.message_id for s in slots],
            [s.coupon_code for s in slots],
            [s.lane for s in slots],
            [s.position for s in slots],
            now,
            claim_id,
            lease_until,
        )


_CLAIM_MANY_SQL = (
    f"UPDATE {messages.fullname} SET status = '{MessageStatus.SENDING.value}', claimed_at = $5, "  # noqa: S608
    "attempts = attempts + 1, coupon_code = batch.coupon_code, claim_id = $6, lane = batch.lane, "
    "lane_position = batch.lane_position, lease_until = $7 "
    "FROM unnest($1::bigint[], $2::varchar[], $3::smallint[], $4::integer[]) "
    "AS batch (id, coupon_code, lane, lane_position) "
    f"WHERE {messages.fullname}.id = batch.id"
)


async def place_in_lanes(
    conn: AsyncConnection, claim_id: str, places: Sequence[tuple[int, int, int]], lease_until: datetime
) -> None:
    """(message id, lane, position) of messages whose coupon the store's platform must confirm first: their
    place in the claim, taken when the confirmation moves them to `sending`."""
    if places:
        await conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("message_id"))
            .values(
                claim_id=claim_id,
                lane=bindparam("claimed_lane"),
                lane_position=bindparam("claimed_position"),
                lease_until=lease_until,
            ),
            [
                {"message_id": message_id, "claimed_lane": lane, "claimed_position": position}
                for message_id, lane, position in places
            ],
        )


def _claimed_by(message_id: int, claim_id: str | None) -> list[Any]:
    """The message, while the claim still holds it: a sender whose lease ran out and whose claim was settled
    by another sender changes nothing."""
    where = [messages.c.id == message_id]
    if claim_id is not None:
        where += [messages.c.claim_id == claim_id, messages.c.status == MessageStatus.SENDING]
    return where


_UNCLAIMED = {"claim_id": None, "lane": None, "lane_position": None, "lease_until": None}


async def renew_lease(conn: AsyncConnection, claim_id: str, until: datetime) -> None:
    # The rows locked in id order, as mark_claimed_sent_autocommit locks several: the two never deadlock.
    held = (
        select(messages.c.id)
        .where(messages.c.claim_id == claim_id, messages.c.status == MessageStatus.SENDING)
        .order_by(messages.c.id)
        .with_for_update()
        .cte("held")
        .prefix_with("MATERIALIZED")
    )
    await conn.execute(update(messages).where(messages.c.id == held.c.id).values(lease_until=until))


async def release(conn: AsyncConnection, claim_id: str, message_ids: Sequence[int]) -> None:
    """Messages of the claim that were never started go back to the queue, their claim not counted."""
    if message_ids:
        await conn.execute(
            update(messages)
            .where(
                messages.c.id.in_(list(message_ids)),
                messages.c.claim_id == claim_id,
                messages.c.status == MessageStatus.SENDING,
            )
            .values(status=MessageStatus.PENDING, attempts=messages.c.attempts - 1, **_UNCLAIMED)
        )


async def expired_claims(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Claims whose sender stopped renewing their lease: it is gone, or cut off from the database."""
    rows = await conn.execute(
        select(messages.c.claim_id)
        .where(messages.c.status == MessageStatus.SENDING, messages.c.lease_until < now)
        .group_by(messages.c.claim_id)
        .limit(limit)
    )
    return [r.claim_id for r in rows.all()]


async def lock_expired_claim(
    conn: AsyncConnection, claim_id: str, now: datetime
) -> list[tuple[Unsettled, str]]:
    """The claim's messages still in `sending`, locked, all at once: deciding which one of a lane may have
    been on a connection needs the whole lane (a second sender settling the same claim waits, then finds
    nothing left in `sending`)."""
    rows = await conn.execute(
        select(
            messages.c.id,
            messages.c.flow,
            messages.c.lane,
            messages.c.lane_position,
            messages.c.marketing,
            messages.c.resent_at,
        )
        .where(
            messages.c.claim_id == claim_id,
            messages.c.status == MessageStatus.SENDING,
            messages.c.lease_until < now,
        )
        .order_by(messages.c.id)
        .with_for_update()
    )
    return [
        (Unsettled(r.id, r.lane or 0, r.lane_position or 0, r.marketing, r.resent_at is not None), r.flow)
        for r in rows.all()
    ]


async def settle_claim(
    conn: AsyncConnection,
    resend: Sequence[int],
    uncertain: Sequence[int],
    requeue: Sequence[int],
    now: datetime,
) -> None:
    if resend:
        await conn.execute(
            update(messages)
            .where(messages.c.id.in_(list(resend)))
            .values(status=MessageStatus.PENDING, due_at=now, resent_at=now, **_UNCLAIMED)
        )
    if uncertain:
        await conn.execute(
            update(messages)
            .where(messages.c.id.in_(list(uncertain)))
            .values(status=MessageStatus.SKIPPED, skip_reason=UNCERTAIN, lease_until=None)
        )
    if requeue:
        await conn.execute(
            update(messages)
            .where(messages.c.id.in_(list(requeue)))
            .values(status=MessageStatus.PENDING, attempts=messages.c.attempts - 1, **_UNCLAIMED)
        )


async def resend_once(conn: AsyncConnection, message_id: int, claim_id: str, now: datetime) -> bool:
    """A transactional message whose hand-over may or may not have worked: back to the queue, once."""
    done = await conn.execute(
        update(messages)
        .where(*_claimed_by(message_id, claim_id))
        .values(status=MessageStatus.PENDING, due_at=now, resent_at=now, **_UNCLAIMED)
    )
    return bool(done.rowcount)


async def mark_uncertain(conn: AsyncConnection, message_id: int, claim_id: str, error: str) -> bool:
    """A message whose hand-over may or may not have worked, not to be sent again."""
    done = await conn.execute(
        update(messages)
        .where(*_claimed_by(message_id, claim_id))
        .values(status=MessageStatus.SKIPPED, skip_reason=UNCERTAIN, last_error=error, lease_until=None)
    )
    return bool(done.rowcount)


async def fail_unclaimed(conn: AsyncConnection, message_id: int, error: str) -> None:
    """A pending message that could not even be decided (its data breaks the decision): failed, once."""
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.status == MessageStatus.PENDING)
        .values(status=MessageStatus.FAILED, last_error=error)
    )


async def defer_many(conn: AsyncConnection, deferred: Sequence[tuple[int, datetime, str]]) -> None:
    """(message id, due again at, reason) for each deferred message."""
    if deferred:
        await conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("message_id"))
            .values(due_at=bindparam("deferred_until"), last_error=bindparam("deferred_reason")),
            [
                {"message_id": message_id, "deferred_until": until, "deferred_reason": f"deferred: {reason}"}
                for message_id, until, reason in deferred
            ],
        )


async def skip_many(conn: AsyncConnection, skipped: Sequence[tuple[int, str]]) -> None:
    """(message id, reason) for each message that will not be sent."""
    if skipped:
        await conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("message_id"))
            .values(status=MessageStatus.SKIPPED, skip_reason=bindparam("skipped_reason")),
            [{"message_id": message_id, "skipped_reason": reason} for message_id, reason in skipped],
        )


async def mark_sent(
    conn: AsyncConnection, message_id: int, claim_id: str | None, subject: str, now: datetime
) -> bool:
    """Recorded as sent; False when the claim no longer holds the message (see _claimed_by)."""
    if claim_id is not None:
        # The sender's statement for every message it sends, built once (building it was a sixth of
        # recording an outcome).
        params = {"sent_id": message_id, "sent_claim": claim_id, "sent_subject": subject, "sent_now": now}
        return bool((await conn.execute(_MARK_CLAIMED_SENT, params)).rowcount)
    done = await conn.execute(
        update(messages)
        .where(*_claimed_by(message_id, claim_id))
        .values(status=MessageStatus.SENT, subject=subject, sent_at=now, last_error=None, lease_until=None)
    )
    return bool(done.rowcount)


_MARK_CLAIMED_SENT = (
    update(messages)
    .where(
        messages.c.id == bindparam("sent_id"),
        messages.c.claim_id == bindparam("sent_claim"),
        messages.c.status == MessageStatus.SENDING,
    )
    .values(
        status=MessageStatus.SENT,
        subject=bindparam("sent_subject"),
        sent_at=bindparam("sent_now"),
        last_error=None,
        lease_until=None,
    )
)


async def mark_claimed_sent_autocommit(
    conn: AsyncConnection, claim_id: str, sent: Sequence[tuple[int, str, datetime]]
) -> set[int]:
    """`mark_sent` under a claim, for a connection in autocommit (the sender's outcome connection), for one
    or several messages of the claim (id, subject, sent_at) in one statement sent straight to asyncpg
    (adapters/raw_sql.py); returns the ids the claim still held. One message takes the plain UPDATE (the
    cheaper statement, and most outcomes come alone); several have their rows locked in id order first, as
    `renew_lease` locks a claim's rows, so the two never deadlock."""
    if len(sent) == 1:
        [(message_id, subject, at)] = sent
        status = await raw_sql.execute(conn, _MARK_CLAIMED_SENT_SQL, message_id, claim_id, subject, at)
        return set() if status == "UPDATE 0" else {message_id}
    ordered = sorted(sent)
    rows = await raw_sql.fetch(
        conn,
        _MARK_MANY_CLAIMED_SENT_SQL,
        [message_id for message_id, _, _ in ordered],
        [subject for _, subject, _ in ordered],
        [at for _, _, at in ordered],
        claim_id,
    )
    return {row["id"] for row in rows}


_MARK_CLAIMED_SENT_SQL = (
    f"UPDATE {messages.fullname} SET status = '{MessageStatus.SENT.value}', subject = $3, sent_at = $4, "  # noqa: S608
    f"last_error = NULL, lease_until = NULL "
    f"WHERE id = $1 AND claim_id = $2 AND status = '{MessageStatus.SENDING.value}'"
)


# The CTE emits (and locks) the rows in id order; the UPDATE only touches rows it locked.
_MARK_MANY_CLAIMED_SENT_SQL = (
    f"WITH held AS MATERIALIZED (SELECT id FROM {messages.fullname} "  # noqa: S608
    f"WHERE id = ANY($1::bigint[]) AND claim_id = $4 AND status = '{MessageStatus.SENDING.value}' "
    "ORDER BY id FOR UPDATE) "
    f"UPDATE {messages.fullname} m SET status = '{MessageStatus.SENT.value}', subject = u.subject, "
    "sent_at = u.sent_at, last_error = NULL, lease_until = NULL "
    "FROM held JOIN unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u (id, subject, sent_at) "
    "ON u.id = held.id WHERE m.id = held.id RETURNING m.id"
)


async def mark_retry(
    conn: AsyncConnection, message_id: int, due_at: datetime, error: str, claim_id: str | None = None
) -> bool:
    done = await conn.execute(
        update(messages)
        .where(*_claimed_by(message_id, claim_id))
        .values(status=MessageStatus.PENDING, due_at=due_at, last_error=error, **_UNCLAIMED)
    )
    return bool(done.rowcount)


async def mark_failed(
    conn: AsyncConnection, message_id: int, error: str, claim_id: str | None = None
) -> bool:
    done = await conn.execute(
        update(messages)
        .where(*_claimed_by(message_id, claim_id))
        .values(status=MessageStatus.FAILED, last_error=error, lease_until=None)
    )
    return bool(done.rowcount)


# -- coupons ----------------------------------------------------------------------------------------------


async def issue_coupon(
    conn: AsyncConnection, message: Message, terms: CouponTerms, prefix: str, now: datetime
) -> str:
    """The message's coupon: created once per (store, customer, flow, trigger), with a code unique in the
    store. A code collision (vanishingly rare) simply draws again."""
    key = and_(
        coupons.c.store_id == message.store_id,
        coupons.c.customer_id == message.customer_id,
        coupons.c.flow == message.flow,
        coupons.c.trigger_event_id == message.trigger_event_id,
    )
    for _ in range(8):
        created = await conn.execute(
            insert(coupons)
            .values(
                store_id=message.store_id,
                customer_id=message.customer_id,
                flow=message.flow,
                trigger_event_id=message.trigger_event_id,
                message_id=message.id,
                code=new_code(prefix),
                kind=terms.kind.value,
                value=terms.value,
                currency=terms.currency,
                issued_at=now,
                expires_at=terms.expires_at,
            )
            .on_conflict_do_nothing()
            .returning(coupons.c.code)
        )
        code = created.scalar_one_or_none()
        if code is None:
            code = (await conn.execute(select(coupons.c.code).where(key))).scalar_one_or_none()
        if code is not None:
            return str(code)
    raise RuntimeError("could not draw a unique coupon code in 8 attempts")


async def list_coupons(
    conn: AsyncConnection, store_id: str, customer_id: str, *, limit: int | None = None, offset: int = 0
) -> list[IssuedCoupon]:
    rows = await conn.execute(
        select(coupons)
        .where(coupons.c.store_id == store_id, coupons.c.customer_id == customer_id)
        .order_by(coupons.c.issued_at, coupons.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [_coupon(r) for r in rows.all()]


# -- orders, attribution, products --------------------------------------------------------------------------


@dataclass(frozen=True)
class SeenOrder:
    store_id: str
    customer_id: str
    order: OrderRecorded
    placed_at: datetime


async def record_orders(conn: AsyncConnection, seen: Sequence[SeenOrder]) -> set[tuple[str, str]]:
    """Remember the batch's orders once; return (store, order id) of those not known before (a redelivered
    funnel event finds its order already there)."""
    by_key = {(o.store_id, o.order.order_id): o for o in seen}
    if not by_key:
        return set()
    batch = [by_key[k] for k in sorted(by_key)]
    created = await raw_sql.fetch(
        conn,
        _RECORD_ORDERS_SQL,
        [o.store_id for o in batch],
        [o.order.order_id for o in batch],
        [o.customer_id for o in batch],
        [o.placed_at for o in batch],
        [o.order.total for o in batch],
        [o.order.currency for o in batch],
        [json.dumps(list(o.order.discount_codes)) for o in batch],
    )
    return {(r["store_id"], r["order_id"]) for r in created}


_RECORD_ORDERS_SQL = raw_sql.unnest_insert(
    orders,
    ("store_id", "order_id", "customer_id", "placed_at", "total", "currency", "discount_codes"),
    insert(orders).on_conflict_do_nothing().returning(orders.c.store_id, orders.c.order_id),
)


async def open_coupons(conn: AsyncConnection, store_id: str, codes: Sequence[str]) -> list[OpenCoupon]:
    wanted = sorted({c.strip().upper() for c in codes if c.strip()})
    if not wanted:
        return []
    rows = await conn.execute(
        select(coupons.c.code, coupons.c.message_id, coupons.c.expires_at).where(
            coupons.c.store_id == store_id,
            func.upper(coupons.c.code).in_(wanted),
            coupons.c.redeemed_at.is_(None),
        )
    )
    return [OpenCoupon(r.code, r.message_id, r.expires_at) for r in rows.all()]


async def recent_sends(
    conn: AsyncConnection, keys: Iterable[CustomerKey], since: datetime
) -> dict[CustomerKey, list[SentMessage]]:
    """Per customer, the messages sent since `since` that no order has been attributed to yet."""
    wanted = sorted(set(keys))
    found: dict[CustomerKey, list[SentMessage]] = defaultdict(list)
    if not wanted:
        return found
    for r in await _rows_of(conn, _RECENT_SENDS_SQL, wanted, since):
        found[(r["store_id"], r["customer_id"])].append(SentMessage(r["id"], r["sent_at"]))
    return found


_RECENT_SENDS_SQL = raw_sql.of_customers(
    messages,
    ["store_id", "customer_id", "id", "sent_at"],
    f"t.status = '{MessageStatus.SENT.value}' AND t.sent_at >= $3 AND t.converted_order_id IS NULL",
)


async def sent_message(conn: AsyncConnection, message_id: int) -> SentMessage | None:
    """One sent, not yet converted message (a coupon's, which may be another customer's: a referral)."""
    row = (
        await conn.execute(
            select(messages.c.id, messages.c.sent_at).where(
                messages.c.id == message_id,
                messages.c.status == MessageStatus.SENT,
                messages.c.converted_order_id.is_(None),
            )
        )
    ).first()
    return SentMessage(row.id, row.sent_at) if row else None


async def redeem(
    conn: AsyncConnection, store_id: str, code: str, order_id: str, customer_id: str, at: datetime
) -> None:
    await conn.execute(
        update(coupons)
        .where(coupons.c.store_id == store_id, coupons.c.code == code, coupons.c.redeemed_at.is_(None))
        .values(redeemed_at=at, redeemed_order_id=order_id, redeemed_by=customer_id)
    )


async def attribute(
    conn: AsyncConnection, store_id: str, order_id: str, message_id: int, revenue: Decimal, at: datetime
) -> None:
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.converted_order_id.is_(None))
        .values(converted_at=at, converted_order_id=order_id, revenue=revenue)
    )
    await conn.execute(
        update(orders)
        .where(orders.c.store_id == store_id, orders.c.order_id == order_id)
        .values(attributed_message_id=message_id)
    )


async def count_products(conn: AsyncConnection, new_orders: Sequence[SeenOrder]) -> None:
    """One upsert for the batch: each product's order count grows by the orders that contain it."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for seen in new_orders:
        for product_id in dict.fromkeys(i.product_id for i in seen.order.items):
            item = next(i for i in seen.order.items if i.product_id == product_id)
            key = (seen.store_id, product_id)
            row = rows.setdefault(
                key,
                {
                    "store_id": seen.store_id,
                    "product_id": product_id,
                    "orders_count": 0,
                    "last_ordered_at": seen.placed_at,
                },
            )
            row.update(
                title=item.title or row.get("title"),
                category=item.category or row.get("category"),
                price=item.price,
                orders_count=row["orders_count"] + 1,
                last_ordered_at=max(row["last_ordered_at"], seen.placed_at),
            )
    if not rows:
        return
    batch = [rows[k] for k in sorted(rows)]
    await raw_sql.execute(
        conn,
        _COUNT_PRODUCTS_SQL,
        *([row.get(name) for row in batch] for name in _PRODUCT_COLUMNS),
    )


_PRODUCT_COLUMNS = ("store_id", "product_id", "title", "category", "price", "orders_count", "last_ordered_at")


def _count_products() -> str:
    stmt = insert(products)
    return raw_sql.unnest_insert(
        products,
        _PRODUCT_COLUMNS,
        stmt.on_conflict_do_update(
            index_elements=["store_id", "product_id"],
            set_={
                "title": func.coalesce(stmt.excluded.title, products.c.title),
                "category": func.coalesce(stmt.excluded.category, products.c.category),
                "price": stmt.excluded.price,
                "orders_count": products.c.orders_count + stmt.excluded.orders_count,
                "last_ordered_at": func.greatest(products.c.last_ordered_at, stmt.excluded.last_ordered_at),
            },
        ),
    )


_COUNT_PRODUCTS_SQL = _count_products()


async def products_by_id(conn: AsyncConnection, store_id: str, product_ids: Sequence[str]) -> list[Any]:
    if not product_ids:
        return []
    rows = await conn.execute(
        select(products).where(products.c.store_id == store_id, products.c.product_id.in_(list(product_ids)))
    )
    by_id = {r.product_id: r for r in rows.all()}
    return [by_id[p] for p in product_ids if p in by_id]


async def best_sellers(conn: AsyncConnection, store_id: str, since: datetime, limit: int) -> list[Any]:
    rows = await conn.execute(
        select(products)
        .where(products.c.store_id == store_id, products.c.last_ordered_at >= since)
        .order_by(products.c.orders_count.desc(), products.c.product_id)
        .limit(limit)
    )
    return list(rows.all())


# -- reporting ----------------------------------------------------------------------------------------------


async def list_messages(
    conn: AsyncConnection, store_id: str, customer_id: str, *, limit: int | None = None, offset: int = 0
) -> list[Message]:
    rows = await conn.execute(
        select(messages)
        .where(messages.c.store_id == store_id, messages.c.customer_id == customer_id)
        .order_by(messages.c.created_at, messages.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [_message(r._mapping) for r in rows.all()]


async def flow_counts(conn: AsyncConnection, store_id: str, since: datetime | None) -> list[FlowCount]:
    when = [messages.c.created_at >= since] if since else []
    rows = await conn.execute(
        select(
            messages.c.flow,
            messages.c.status,
            messages.c.skip_reason,
            func.count().label("n"),
            func.count(messages.c.converted_order_id).label("converted"),
            func.count(messages.c.resent_at).label("resent"),
            func.coalesce(func.sum(messages.c.revenue), 0).label("revenue"),
        )
        .where(messages.c.store_id == store_id, *when)
        .group_by(messages.c.flow, messages.c.status, messages.c.skip_reason)
    )
    return [
        FlowCount(
            r.flow, MessageStatus(r.status), r.skip_reason, r.n, r.converted, Decimal(r.revenue), r.resent
        )
        for r in rows.all()
    ]


async def coupon_counts(conn: AsyncConnection, store_id: str, since: datetime | None) -> list[CouponCount]:
    when = [coupons.c.issued_at >= since] if since else []
    rows = await conn.execute(
        select(
            coupons.c.flow,
            func.count().label("issued"),
            func.count(case((coupons.c.redeemed_at.is_not(None), 1))).label("redeemed"),
        )
        .where(coupons.c.store_id == store_id, *when)
        .group_by(coupons.c.flow)
    )
    return [CouponCount(r.flow, r.issued, r.redeemed) for r in rows.all()]


async def customer(conn: AsyncConnection, store_id: str, customer_id: str) -> KnownCustomer | None:
    """One customer as the sender would see them, without locking (previews only read)."""
    found = await conn.execute(
        select(customers).where(customers.c.store_id == store_id, customers.c.customer_id == customer_id)
    )
    row = found.first()
    return _customer(row._mapping) if row is not None else None

"""One batch of funnel events -> one transaction: customers' latest facts, orders (with coupon redemption and
revenue attribution), the messages the flows call for, and audience membership.

Everything is keyed so that a redelivered batch changes nothing: customers are upserted, orders and messages
are inserted once (their unique keys), and attribution happens only for an order seen for the first time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.notifier.adapters import repository
from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.domain.coupons import attributed_message, redeemed_by
from services.notifier.domain.erasure import kept_after
from services.notifier.domain.flows import PlannedMessage, Skipped, plan
from services.notifier.domain.messages import MessageStatus
from shared.clock import Clock
from shared.events import SHOP_WIDE
from shared.funnel_events import (
    CartAbandonedEvent,
    CustomerErasedFunnelEvent,
    FunnelEvent,
    OrderPlacedFunnelEvent,
)
from shared.logging import get_logger
from shared.stores import StoreConfig, StoreRegistry

log = get_logger(__name__)

PLANNED = Counter(
    "notifier_messages_planned_total", "Messages planned by flow and outcome", ["flow", "outcome"]
)

# Called in the batch's transaction with the customers it touched, so audiences follow funnel events.
MembershipHook = Callable[[AsyncConnection, StoreConfig, Collection[str], datetime], Awaitable[None]]


class MessagePlanner:
    def __init__(
        self,
        engine: AsyncEngine,
        stores: StoreRegistry,
        clock: Clock,
        on_messages_due: Callable[[], None] = lambda: None,
        refresh_audiences: MembershipHook = refresh_memberships,
    ) -> None:
        self._engine = engine
        self._stores = stores
        self._clock = clock
        self._on_messages_due = on_messages_due
        self._refresh_audiences = refresh_audiences

    async def __call__(self, events: Sequence[FunnelEvent]) -> None:
        now = self._clock()
        new: list[tuple[str, MessageStatus]] = []
        async with self._engine.begin() as conn:
            touched: list[tuple[str, str]] = []
            # In the order the segmenter said them: what comes before an erasure is recorded before it, so
            # the erasure reaches it (a message planned for the customer), and what comes after it (the
            # customer back with new details) is recorded after it and stays. Nearly every batch has no
            # erasure and is one part.
            for part, erasure in _split_at_erasures(events):
                touched += await self._record(conn, part, now, new)
                if erasure is not None:
                    touched += await self._forget(conn, erasure)
            for store_id, customer_ids in _by_store(touched).items():
                store = self._stores.get(store_id)
                if store is not None:
                    await self._refresh_audiences(conn, store, customer_ids, now)
        for flow, status in new:
            PLANNED.labels(flow, status).inc()
        if any(status == MessageStatus.PENDING for _, status in new):
            self._on_messages_due()

    async def _record(
        self,
        conn: AsyncConnection,
        events: Sequence[FunnelEvent],
        now: datetime,
        new: list[tuple[str, MessageStatus]],
    ) -> list[tuple[str, str]]:
        """Funnel events with no erasure among them: customers' latest facts, carts abandoned, orders and the
        messages planned (the new ones added to `new`). Returns the customers touched."""
        touched = await repository.upsert_customers(conn, ((e.store_id, e.profile) for e in events))
        planned: list[PlannedMessage | Skipped] = []
        orders: list[repository.SeenOrder] = []
        abandoned: list[tuple[str, str, datetime]] = []
        for event in events:
            store = self._stores.get(event.store_id)
            if store is None:
                log.warning(
                    "funnel_event_for_unknown_store", store_id=event.store_id, event_id=event.event_id
                )
                continue
            if isinstance(event, CartAbandonedEvent):
                abandoned.append((event.store_id, event.customer_id, event.occurred_at))
            elif isinstance(event, OrderPlacedFunnelEvent):
                orders.append(
                    repository.SeenOrder(event.store_id, event.customer_id, event.payload, event.occurred_at)
                )
            planned.extend(plan(event, store.notifier, now))
        await repository.note_carts_abandoned(conn, abandoned)
        await self._on_orders(conn, orders)
        new += await repository.record_planned(conn, planned, now)
        return touched

    async def _forget(
        self, conn: AsyncConnection, erasure: CustomerErasedFunnelEvent
    ) -> list[tuple[str, str]]:
        """Apply an erasure; returns the customers touched. What the customer said after it (an erasure that
        reached us after the customer came back) is taken up again from its snapshot, as the funnel events
        after it would have had it reached us first."""
        whole_store = erasure.customer_id == SHOP_WIDE
        kept = None if whole_store else kept_after(erasure)
        await repository.forget_customer(
            conn, erasure.store_id, None if whole_store else erasure.customer_id, kept
        )
        if kept is not None:
            await repository.upsert_customers(conn, [(erasure.store_id, erasure.profile)])
        return [(erasure.store_id, erasure.customer_id)]

    async def _on_orders(self, conn: AsyncConnection, seen: list[repository.SeenOrder]) -> None:
        """New orders (a redelivered one settled its coupon and attribution the first time): products
        counted, coupons redeemed, revenue attributed; a few statements for the whole batch."""
        created = await repository.record_orders(conn, seen)
        new = [o for o in seen if (o.store_id, o.order.order_id) in created]
        if not new:
            return
        await repository.count_products(conn, new)
        windows = {o.store_id: self._window(o.store_id) for o in new}
        since = min(o.placed_at - windows[o.store_id] for o in new)
        recent = await repository.recent_sends(conn, ((o.store_id, o.customer_id) for o in new), since)
        credited: set[int] = set()
        for o in new:
            coupon = None
            if o.order.discount_codes:
                coupon = redeemed_by(
                    o.order.discount_codes,
                    await repository.open_coupons(conn, o.store_id, o.order.discount_codes),
                    o.placed_at,
                )
            sent = list(recent.get((o.store_id, o.customer_id), []))
            if coupon is not None:
                await repository.redeem(
                    conn, o.store_id, coupon.code, o.order.order_id, o.customer_id, o.placed_at
                )
                carrier = (
                    await repository.sent_message(conn, coupon.message_id) if coupon.message_id else None
                )
                sent += [carrier] if carrier else []
            # A message earns at most one order, also between two orders of the same batch.
            sent = [m for m in sent if m.message_id not in credited]
            message_id = attributed_message(coupon, sent, o.placed_at, windows[o.store_id])
            if message_id is not None:
                credited.add(message_id)
                await repository.attribute(
                    conn, o.store_id, o.order.order_id, message_id, o.order.total, o.placed_at
                )

    def _window(self, store_id: str) -> timedelta:
        store = self._stores.get(store_id)
        return store.notifier.attribution_window if store else timedelta(0)


def _split_at_erasures(
    events: Sequence[FunnelEvent],
) -> list[tuple[Sequence[FunnelEvent], CustomerErasedFunnelEvent | None]]:
    """The batch as runs of events, each followed by the erasure that ends it (None after the last run)."""
    parts: list[tuple[Sequence[FunnelEvent], CustomerErasedFunnelEvent | None]] = []
    start = 0
    for i, event in enumerate(events):
        if isinstance(event, CustomerErasedFunnelEvent):
            parts.append((events[start:i], event))
            start = i + 1
    parts.append((events[start:], None))
    return parts


def _by_store(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for store_id, customer_id in keys:
        if customer_id != SHOP_WIDE:
            grouped.setdefault(store_id, []).append(customer_id)
    return grouped

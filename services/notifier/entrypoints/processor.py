"""One batch of funnel events -> one transaction: customers' contact state and the messages to send."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.domain.flows import Skipped, plan
from shared.events import SHOP_WIDE
from shared.funnel_events import CustomerErasedFunnelEvent, FunnelEvent

PLANNED = Counter(
    "notifier_messages_planned_total", "Messages planned by flow and outcome", ["flow", "outcome"]
)


class MessagePlanner:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], datetime],
        on_messages_due: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._on_messages_due = on_messages_due

    async def __call__(self, events: Sequence[FunnelEvent]) -> None:
        now = self._clock()
        planned = [item for event in events for item in plan(event, now)]
        erasures = [e for e in events if isinstance(e, CustomerErasedFunnelEvent)]
        async with self._engine.begin() as conn:
            await repository.upsert_customers(
                conn,
                ((e.store_id, e.profile) for e in events if not isinstance(e, CustomerErasedFunnelEvent)),
            )
            due = await repository.record_planned(conn, planned, now)
            for erased in erasures:
                whole_store = erased.customer_id == SHOP_WIDE
                await repository.forget_customer(
                    conn, erased.store_id, None if whole_store else erased.customer_id
                )
        for item in planned:
            PLANNED.labels(item.flow.name, item.reason if isinstance(item, Skipped) else "planned").inc()
        if due:
            self._on_messages_due()

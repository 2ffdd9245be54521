"""Tells the store's platform when a customer withdrew consent here (an unsubscribe, a spam complaint, an
address that bounced for good), so the store's own newsletters stop too.

The change is queued with the unsubscription in one transaction (consent_changes); this worker leases due
changes, calls the platform (Shopify `customerEmailMarketingConsentUpdate` with the time of the change, or the
WooCommerce site's opt-in meta field), and records the outcome: done, retried with backoff while the platform
is away, or failed with the reason when it refuses for good (the store's connection status shows it).
Per customer only the latest change is sent: an older one is superseded, so the later change wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import consent_repository, platform_repository
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.domain.coupon_platforms import (
    CouponPlatform,
    PlatformError,
    Retry,
    StoreWideRefusal,
    after_failure,
)
from shared.logging import get_logger
from shared.stores import StoreRegistry
from shared.workers import Poller

log = get_logger(__name__)

SYNCED = Counter(
    "notifier_consent_sync_total",
    "Consent changes told to the store's platform, by platform and outcome",
    ["platform", "outcome"],
)
LEASE = timedelta(minutes=2)


class ConsentSync(Poller):
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        stores: StoreRegistry,
        platforms: PlatformClients,
        clock: Callable[[], datetime],
        batch_size: int = 50,
        idle_seconds: float = 1.0,
    ) -> None:
        super().__init__("consent-sync", batch_size, idle_seconds)
        self._engine = engine
        self._stores = stores
        self._platforms = platforms
        self._clock = clock
        self._batch = batch_size

    async def step(self) -> int:
        now = self._clock()
        async with self._engine.begin() as conn:
            due = await consent_repository.take_due(conn, now, self._batch, LEASE)
        if not due:
            return 0
        latest: dict[tuple[str, str], Any] = {}
        for change in due:  # ordered by change time: the last one per customer wins
            latest[(change.store_id, change.customer_id)] = change
        superseded = [c.id for c in due if latest[(c.store_id, c.customer_id)].id != c.id]
        outcomes = await asyncio.gather(*(self._tell(c) for c in latest.values()))
        now = self._clock()
        async with self._engine.begin() as conn:
            await consent_repository.finish(conn, superseded, "superseded")
            for change, error in zip(latest.values(), outcomes, strict=True):
                if error is None:
                    SYNCED.labels(change.platform, "done").inc()
                    await consent_repository.finish(conn, [change.id], "done")
                    await platform_repository.record_connection(
                        conn, change.store_id, change.platform, None, now
                    )
                    continue
                verdict = after_failure(error, attempts=change.attempts + 1, now=now, send_before=None)
                if isinstance(verdict, Retry):
                    SYNCED.labels(change.platform, "retry").inc()
                    await consent_repository.retry(conn, change.id, verdict.due_at, verdict.reason)
                    continue
                SYNCED.labels(change.platform, "failed").inc()
                await consent_repository.finish(conn, [change.id], "failed", verdict.reason)
                if isinstance(error, StoreWideRefusal):
                    await platform_repository.record_connection(
                        conn, change.store_id, change.platform, error.reason, now
                    )
                log.warning(
                    "consent_sync_failed",
                    store_id=change.store_id,
                    platform=change.platform,
                    reason=verdict.reason,
                )
        return len(due)

    async def _tell(self, change: Any) -> PlatformError | None:
        store = self._stores.get(change.store_id)
        if store is None:
            return StoreWideRefusal("store no longer in the registry")
        try:
            await self._platforms.update_consent(
                store,
                CouponPlatform(change.platform),
                change.customer_id,
                change.email,
                subscribed=change.subscribed,
                changed_at=change.changed_at,
            )
        except PlatformError as exc:
            return exc
        return None

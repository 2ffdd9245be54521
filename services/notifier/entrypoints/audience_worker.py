"""The audience worker: re-evaluates memberships whose time has come (a 7-day window closing), then pushes
pending additions and removals to each store's sync endpoint.

Safe with several notifier instances: due customers and pending members are locked with SKIP LOCKED, and a
batch being delivered is leased. A batch is built and stored in one transaction, posted outside any
transaction, and its members count as synced only in the transaction that follows the endpoint's 2xx.
A batch that keeps failing is retried with growing delays, never dropped: dropping a removal would leave a
customer who withdrew consent in the advertiser's audience.
"""

from __future__ import annotations

import bisect
import uuid
from datetime import datetime, timedelta

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import audience_repository as repo
from services.notifier.adapters.audience_sync import AudienceSyncClient, SyncFailed, encode_sync_body
from shared.clock import Clock, utcnow
from shared.logging import get_logger
from shared.stores import StoreConfig, StoreRegistry
from shared.workers import Poller, backoff

log = get_logger(__name__)

SYNC_BATCHES = Counter(
    "notifier_audience_sync_batches_total",
    "Audience push-sync batch deliveries, by outcome (delivered, failed)",
    ["outcome"],
)
SYNC_MEMBERS = Counter(
    "notifier_audience_sync_members_total",
    "Members delivered to audience sync endpoints, by change (added, removed)",
    ["change"],
)
REEVALUATED = Counter(
    "notifier_audience_reevaluations_total", "Customers re-evaluated because a time-based membership lapsed"
)


class AudienceWorker(Poller):
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        stores: StoreRegistry,
        clock: Clock = utcnow,
        sync_client: AudienceSyncClient | None = None,
        batch_size: int = 500,
        idle_seconds: float = 5.0,
        lease: timedelta = timedelta(minutes=2),
        first_retry: timedelta = timedelta(seconds=30),
        max_retry: timedelta = timedelta(hours=1),
        batches_per_step: int = 10,
    ) -> None:
        super().__init__("audiences", batch_size, idle_seconds)
        self._engine = engine
        self._stores = stores
        self._clock = clock
        self._sync_client = sync_client
        self._lease = lease
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._batches_per_step = batches_per_step
        self._prepared = False
        self._began_with = ""  # the store whose pending members the last step built batches of first

    async def run_forever(self) -> None:
        if self._sync_client is not None:
            await super().run_forever()
            return
        # The worker's own HTTP client, closed when the worker stops.
        async with httpx.AsyncClient(follow_redirects=False) as http:
            self._sync_client = AudienceSyncClient(http)
            try:
                await super().run_forever()
            finally:
                self._sync_client = None

    def _syncing_stores(self) -> dict[str, StoreConfig]:
        return {s.store_id: s for s in self._stores if s.audiences.sync is not None}

    async def step(self) -> int:
        now = self._clock()
        if not self._prepared:
            await self.prepare()
        reevaluated = await self.reevaluate_due(now)
        built, delivered = await self.push(now)
        more = reevaluated >= self._batch_size or built + delivered >= self._batches_per_step
        return self._batch_size if more else reevaluated + delivered

    async def prepare(self) -> None:
        """Members never pushed to a store whose sync was switched on since become pending."""
        async with self._engine.begin() as conn:
            for store_id in self._syncing_stores():
                marked = await repo.mark_pending_for_sync(conn, store_id)
                if marked:
                    log.info("audience_sync_backfill", store_id=store_id, members=marked)
        self._prepared = True

    async def reevaluate_due(self, now: datetime) -> int:
        handled = 0
        async with self._engine.begin() as conn:
            due = await repo.due_reevaluations(conn, now, self._batch_size)
            by_store: dict[str, list[str]] = {}
            for store_id, customer_id in due:
                by_store.setdefault(store_id, []).append(customer_id)
            for store_id, customer_ids in sorted(by_store.items()):
                store = self._stores.get(store_id)
                if store is None:
                    await repo.drop_reevaluations(conn, store_id)
                    continue
                locked = await repo.lock_customers(conn, store_id, customer_ids)
                await repo.refresh_memberships(conn, store, locked, now)
                handled += len(locked)
        REEVALUATED.inc(handled)
        return handled

    async def push(self, now: datetime) -> tuple[int, int]:
        """Build batches of pending changes, then deliver due batches. Returns (built, delivered)."""
        stores = self._syncing_stores()
        if not stores:
            return 0, 0
        async with self._engine.connect() as conn:
            pending = await repo.audiences_pending_sync(conn, stores.keys())
        # Each step begins with the store after the one the step before began with: a store with a long
        # backlog (sync just switched on for a million customers) takes its turn, not every step's budget.
        ids = sorted(pending)
        start = bisect.bisect_right(ids, self._began_with)
        ids = ids[start:] + ids[:start]
        self._began_with = ids[0] if ids else ""
        built = 0
        for store_id in ids:
            budget = self._batches_per_step - built
            if budget <= 0:
                break
            built += await self._build_batches(stores[store_id], pending[store_id], now, budget)
        delivered = 0
        for _ in range(self._batches_per_step):
            outcome = await self._deliver_one(stores, now)
            if outcome is None:
                break
            delivered += outcome
        return built, delivered

    async def _build_batches(
        self, store: StoreConfig, audiences: list[str], now: datetime, budget: int
    ) -> int:
        sync = store.audiences.sync
        assert sync is not None
        built = 0
        for audience in audiences:
            while built < budget:
                async with self._engine.begin() as conn:
                    pending = await repo.lock_pending_members(conn, store.store_id, audience, sync.batch_size)
                    if not pending:
                        break
                    batch_id = str(uuid.uuid4())
                    added = [p.contact for p in pending if p.contact is not None]
                    removed = [p.synced_contact for p in pending if p.synced_contact is not None]
                    body = encode_sync_body(
                        batch_id=batch_id,
                        store_id=store.store_id,
                        audience=audience,
                        created_at=now,
                        added=added,
                        removed=removed,
                    )
                    await repo.record_batch(
                        conn,
                        batch_id=batch_id,
                        store_id=store.store_id,
                        audience=audience,
                        body=body,
                        customer_ids=[p.customer_id for p in pending],
                        added=len(added),
                        removed=len(removed),
                        now=now,
                    )
                built += 1
                if len(pending) < sync.batch_size:
                    break
        return built

    async def _deliver_one(self, stores: dict[str, StoreConfig], now: datetime) -> int | None:
        """Deliver the oldest due batch: 1 if delivered, 0 if it failed, None if nothing was due."""
        async with self._engine.begin() as conn:
            batch = await repo.claim_due_batch(conn, stores.keys(), now, now + self._lease)
        if batch is None:
            return None
        sync = stores[batch.store_id].audiences.sync
        assert sync is not None
        assert self._sync_client is not None
        try:
            await self._sync_client.deliver(sync, batch.batch_id, batch.body)
        except SyncFailed as exc:
            delay = backoff(batch.attempts, first=self._first_retry, cap=self._max_retry)
            async with self._engine.begin() as conn:
                await repo.retry_batch_later(conn, batch, now + delay, str(exc))
            SYNC_BATCHES.labels("failed").inc()
            log.warning(
                "audience_sync_failed",
                store_id=batch.store_id,
                audience=batch.audience,
                batch_id=batch.batch_id,
                attempts=batch.attempts,
                retry_in_seconds=delay.total_seconds(),
                permanent=not exc.retryable,
                error=str(exc),
            )
            return 0
        async with self._engine.begin() as conn:
            await repo.complete_batch(conn, batch, self._clock())
        SYNC_BATCHES.labels("delivered").inc()
        SYNC_MEMBERS.labels("added").inc(batch.added)
        SYNC_MEMBERS.labels("removed").inc(batch.removed)
        log.info(
            "audience_sync_delivered",
            store_id=batch.store_id,
            audience=batch.audience,
            batch_id=batch.batch_id,
            added=batch.added,
            removed=batch.removed,
        )
        return 1

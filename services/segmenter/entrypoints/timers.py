"""The timer worker: fires due timers (health checks, cart abandonment, birthdays) by wall time.

Timers live in Postgres with an index on due_at, so nothing scans all customers and nothing is lost on a
restart. Several instances share the work: timers and then their profiles are locked with SKIP LOCKED, so a
worker never waits on a profile the consumer holds (and so can never deadlock with it); a skipped timer is
simply picked up on the next round. The same goes for a profile the consumer of the same process is reading
for a batch decided ahead, which holds no lock yet (profiles_ahead.py).

In the service, a round fires only the timers that came due before every event sent by then has been read
(shared/consumer_wait.py): after an outage of the database or of the segmenter, the timers wait while the
consumer reads what was sent meanwhile, so that a cart's timer sees the order queued behind it instead of
having its buyer sent an abandoned-cart email.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple

from aiokafka import TopicPartition
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.segmenter.adapters import repository
from services.segmenter.adapters.profile_cache import ProfileCache
from services.segmenter.adapters.repository import Writer
from services.segmenter.domain.funnel import decide_timer
from services.segmenter.domain.profile import Profile
from services.segmenter.entrypoints.profiles_ahead import ProfilesAhead
from services.segmenter.service_layer.write_set import Changes, rules_for
from shared.clock import Clock
from shared.consumer_wait import ConsumerWait
from shared.logging import get_logger
from shared.stores import StoreRegistry
from shared.workers import Poller

log = get_logger(__name__)

FIRED = Counter("segmenter_timers_fired_total", "Timers fired, by kind", ["kind"])


def _kind_label(kind: str) -> str:
    return "cart" if kind.startswith("cart:") else kind


class _Round(NamedTuple):
    """What a round did: how many timers it fired, the profiles it wrote, the transaction that wrote them
    (None when it wrote none), and how many outbox rows."""

    fired: int
    written_profiles: list[Profile]
    writer: Writer | None
    outbox_rows: int


class TimerWorker(Poller):
    def __init__(
        self,
        engine: AsyncEngine,
        stores: StoreRegistry,
        clock: Clock,
        *,
        batch_size: int = 500,
        max_sleep_seconds: float = 1.0,
        on_outbox_written: Callable[[], None] = lambda: None,
        profile_cache: ProfileCache | None = None,
        profiles_ahead: ProfilesAhead | None = None,
        consumer: ConsumerWait | None = None,
    ) -> None:
        self._engine = engine
        # Without it (tests of the rules alone), timers fire by the clock alone.
        self._consumer = consumer
        # The consumer's, when they share a process: a round leaves the customers whose profiles a batch
        # decided ahead is reading for a later round, so that the batch is not decided again
        # (profiles_ahead.py).
        self._profiles_ahead = profiles_ahead
        # The consumer's, when they share a process: the profiles a timer fires on were mostly written by
        # a recent batch, and the next batch finds those a round wrote.
        self._cache = profile_cache if profile_cache is not None else ProfileCache(0)
        self._stores = stores
        self._clock = clock
        super().__init__("timers", batch_size, max_sleep_seconds)
        self._batch_size = batch_size
        self._on_outbox_written = on_outbox_written

    async def step(self) -> int:
        return await self.fire_due()

    async def fire_due(self) -> int:
        """Fire every timer due now (one transaction); return how many fired."""
        now = self._clock()
        ahead = self._profiles_ahead
        try:
            return await self._fire_due(now, ahead)
        finally:
            if ahead is not None:
                ahead.fired()  # committed or rolled back: the round's customers are free again

    async def _fire_due(self, now: datetime, ahead: ProfilesAhead | None) -> int:
        moved: Mapping[TopicPartition, datetime] = {}
        async with self._engine.begin() as conn:
            until = now
            if self._consumer is not None:
                moved, until = await self._consumer.until(conn, now)
            done = await self._fire(conn, now, until, ahead)
        # Committed: the progress recorded is the table's, and these rows now hold what this round wrote.
        if self._consumer is not None:
            self._consumer.committed(moved)
        if done.written_profiles:
            assert done.writer is not None
            self._cache.remember(done.written_profiles, done.writer.xid, done.writer.server)
        if done.outbox_rows:
            self._on_outbox_written()
        return done.fired

    async def _fire(
        self, conn: AsyncConnection, now: datetime, until: datetime, ahead: ProfilesAhead | None
    ) -> _Round:
        """Fire the timers due by `until`, in the round's transaction."""
        due = await repository.claim_due_timers(conn, until, self._batch_size)
        if not due:
            return _Round(0, [], None, 0)
        keys = {(t.store_id, t.customer_id) for t in due}
        if ahead is not None:
            keys = ahead.fire(keys)  # a timer whose profile is read ahead stays due, as a locked one does
        loaded = await repository.load_profiles_with_versions(conn, keys, self._cache, skip_locked=True)
        profiles = loaded.profiles
        # What the rows held, as the consumer's batches tell it (processor.py): a profile a timer leaves
        # as it was is not written again, nor the orders and history rows it already had (a cart's or a
        # birthday's timer rewrote every order and the whole history of its customer).
        changes = Changes(stored_profiles=dict(profiles))
        fired = 0
        for timer in due:
            key = (timer.store_id, timer.customer_id)
            profile = profiles.get(key)
            if profile is None:
                continue  # the consumer holds or reads ahead this profile right now: fire it next round
            decision = decide_timer(
                profile, timer.kind, timer.due_at, now, rules_for(self._stores, timer.store_id)
            )
            # A fired timer is done unless the decision set it again (the next health check, next year).
            decision.timers.setdefault(timer.kind, None)
            profiles[key] = decision.profile
            changes.record(decision)
            fired += 1
            FIRED.labels(_kind_label(timer.kind)).inc()
        outbox_rows = await changes.write(conn)
        writer = loaded.writer
        if writer is None and changes.written:
            writer = await repository.current_writer(conn)
        return _Round(fired, changes.written, writer, outbox_rows)

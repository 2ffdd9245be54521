"""One batch of storefront events -> one transaction: dedupe records, profiles, transitions, outbox rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters import repository
from services.segmenter.domain.funnel import decide
from services.segmenter.domain.profile import Profile, Transition
from shared.events import StorefrontEvent
from shared.funnel_events import FunnelEvent

DUPLICATES = Counter(
    "segmenter_duplicate_events_total", "Events skipped because their id was already processed"
)
TRANSITIONS = Counter("segmenter_transitions_total", "Funnel stage transitions", ["to_stage"])


class FunnelProcessor:
    def __init__(self, engine: AsyncEngine, on_outbox_written: Callable[[], None] = lambda: None) -> None:
        self._engine = engine
        self._on_outbox_written = on_outbox_written

    async def __call__(self, events: Sequence[StorefrontEvent]) -> None:
        async with self._engine.begin() as conn:
            first_seen = await repository.claim_events(conn, [(e.event_id, e.store_id) for e in events])
            fresh: list[StorefrontEvent] = []
            for event in events:
                # `discard` also drops a second copy of the same id inside this batch.
                if event.event_id in first_seen:
                    first_seen.discard(event.event_id)
                    fresh.append(event)
            DUPLICATES.inc(len(events) - len(fresh))
            if not fresh:
                return
            profiles = await repository.load_profiles_for_update(
                conn, ((e.store_id, e.customer.key) for e in fresh)
            )
            changed: dict[tuple[str, str], Profile] = {}
            transitions: list[tuple[Profile, Transition]] = []
            funnel_events: list[FunnelEvent] = []
            # Events arrive in partition order, so one customer's events are decided in the order sent.
            for event in fresh:
                key = (event.store_id, event.customer.key)
                decision = decide(profiles.get(key), event)
                profiles[key] = changed[key] = decision.profile
                transitions.extend((decision.profile, t) for t in decision.transitions)
                funnel_events.extend(decision.funnel_events)
            await repository.save_profiles(conn, changed.values())
            await repository.add_transitions(conn, transitions)
            written = await repository.add_to_outbox(conn, funnel_events)
        for _, transition in transitions:
            TRANSITIONS.labels(transition.to_stage.value).inc()
        if written:
            self._on_outbox_written()

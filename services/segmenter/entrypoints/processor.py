"""One batch of storefront events -> one transaction: dedupe records, identity resolution, profiles,
transitions, timers, order projections, co-purchases and outbox rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.segmenter.adapters import repository
from services.segmenter.domain.funnel import Decision, after_merge, decide, erase, event_identifiers, merge
from services.segmenter.domain.identity import resolve
from services.segmenter.domain.profile import OrderFact, Profile, Transition
from shared.events import SHOP_WIDE, CustomerErasedEvent, OrderRefundedEvent, StorefrontEvent
from shared.funnel_events import FunnelEvent
from shared.funnel_rules import FunnelRules
from shared.metrics import count_each
from shared.stores import StoreRegistry

DUPLICATES = Counter(
    "segmenter_duplicate_events_total", "Events skipped because their id was already processed"
)
TRANSITIONS = Counter("segmenter_transitions_total", "Funnel transitions", ["dimension", "to"])
MERGES = Counter("segmenter_profile_merges_total", "Profiles found to be one customer and merged")

Key = tuple[str, str]


@dataclass
class Changes:
    """Everything a batch (or a round of timers) changes, written in one go at the end of the transaction."""

    profiles: dict[Key, Profile] = field(default_factory=dict)
    transitions: list[tuple[Profile, Transition]] = field(default_factory=list)
    funnel_events: list[FunnelEvent] = field(default_factory=list)
    timers: dict[tuple[str, str, str], datetime | None] = field(default_factory=dict)
    identities: dict[Key, str] = field(default_factory=dict)
    new_orders: list[tuple[str, OrderFact]] = field(default_factory=list)
    merges: list[tuple[str, str, str]] = field(default_factory=list)
    # What the database held when the batch began: rows that come out of the batch identical are not
    # written again (most events touch a profile without changing its identities, orders or often anything).
    stored_profiles: dict[Key, Profile] = field(default_factory=dict)
    stored_identities: dict[Key, str] = field(default_factory=dict)

    def record(self, decision: Decision) -> None:
        p = decision.profile
        self.profiles[(p.store_id, p.customer_id)] = p
        for identifier in p.identifiers:
            self.identities[(p.store_id, identifier)] = p.customer_id
        self.transitions.extend((p, t) for t in decision.transitions)
        self.funnel_events.extend(decision.funnel_events)
        for kind, due in decision.timers.items():
            self.timers[(p.store_id, p.customer_id, kind)] = due
        self.new_orders.extend((p.store_id, o) for o in decision.new_orders)

    async def write(self, conn: AsyncConnection) -> int:
        # Profiles are immutable and `decide` returns the very profile it got when nothing changed, so
        # identity tells an untouched profile, and an order or identity carried over unchanged, apart.
        changed = [p for key, p in self.profiles.items() if p is not self.stored_profiles.get(key)]
        await repository.save_profiles(conn, changed)
        await repository.save_identities(
            conn, {k: c for k, c in self.identities.items() if self.stored_identities.get(k) != c}
        )
        await repository.save_orders(conn, self._changed_orders(changed))
        await repository.add_copurchases(conn, self.new_orders)
        await repository.add_transitions(conn, self.transitions)
        await repository.apply_timers(conn, self.timers)
        # Last: rows this batch wrote under an absorbed id (before the event that linked it) move too.
        await repository.repoint_merged(conn, self.merges)
        # An erased customer can no longer be found by email or anonymous id.
        for p in self.profiles.values():
            if p.erased:
                await repository.forget_identities(conn, p.store_id, p.customer_id, keep=p.identifiers)
        count_each(TRANSITIONS, ((t.dimension, t.to_value) for _, t in self.transitions))
        return await repository.add_to_outbox(conn, self.funnel_events)

    def _changed_orders(self, changed: list[Profile]) -> list[tuple[Profile, list[OrderFact]]]:
        out = []
        for p in changed:
            if p.merged_into is not None:
                continue
            stored = self.stored_profiles.get((p.store_id, p.customer_id))
            # Orders the profile already held under this customer id, unchanged, are in the table already.
            kept = {id(o) for o in stored.orders} if stored is not None else set()
            fresh = [o for o in p.orders if id(o) not in kept]
            if fresh:
                out.append((p, fresh))
        return out


_DEFAULT_RULES = FunnelRules()


def rules_for(stores: StoreRegistry, store_id: str) -> FunnelRules:
    store = stores.get(store_id)
    return store.funnel if store is not None else _DEFAULT_RULES


class FunnelProcessor:
    def __init__(
        self, engine: AsyncEngine, stores: StoreRegistry, on_outbox_written: Callable[[], None] = lambda: None
    ) -> None:
        self._engine = engine
        self._stores = stores
        self._on_outbox_written = on_outbox_written

    async def __call__(self, events: Sequence[StorefrontEvent]) -> None:
        async with self._engine.begin() as conn:
            first_seen = await repository.claim_events(conn, [(e.event_id, e.store_id) for e in events])
            fresh: list[StorefrontEvent] = []
            for event in events:
                # `discard` also drops a second copy of the same id inside this batch.
                if (event.store_id, event.event_id) in first_seen:
                    first_seen.discard((event.store_id, event.event_id))
                    fresh.append(event)
            DUPLICATES.inc(len(events) - len(fresh))
            if not fresh:
                return
            written = await self._apply(conn, fresh)
        if written:
            self._on_outbox_written()

    async def _apply(self, conn: AsyncConnection, events: list[StorefrontEvent]) -> int:
        # Each event's identifiers, worked out once for the look-ups below and for resolution.
        ids_of = [event_identifiers(e) for e in events]
        wanted = {(e.store_id, i) for e, ids in zip(events, ids_of, strict=True) for i in ids}
        found = await repository.load_identities(conn, wanted)
        candidates = {(s, c) for (s, _), c in found.items()}
        # identifier -> customer, per store: what resolution consults (and updates) event after event.
        known: dict[str, dict[str, str]] = {}
        for (store, identifier), customer in found.items():
            known.setdefault(store, {})[identifier] = customer
        candidates |= {
            (e.store_id, resolve(ids, {}).customer_id) for e, ids in zip(events, ids_of, strict=True)
        }
        loaded = await repository.load_profiles_for_update(conn, candidates)
        changes = Changes(stored_profiles=dict(loaded), stored_identities=dict(found))
        for event, ids in zip(events, ids_of, strict=True):
            if isinstance(event, CustomerErasedEvent) and event.customer.store_customer_id == SHOP_WIDE:
                await self._erase_shop(conn, event, changes, loaded)
                continue
            self._apply_one(event, ids, known, loaded, changes)
        return await changes.write(conn)

    def _apply_one(
        self,
        event: StorefrontEvent,
        ids: list[str],
        known: dict[str, dict[str, str]],
        loaded: dict[Key, Profile],
        changes: Changes,
    ) -> None:
        store_id = event.store_id
        rules = rules_for(self._stores, store_id)
        in_store = known.setdefault(store_id, {})
        resolution = resolve(ids, in_store)
        survivor_key = (store_id, resolution.customer_id)
        if survivor_key not in loaded and isinstance(event, OrderRefundedEvent):
            return  # a refund for a customer (and so an order) we never saw changes nothing
        profile = loaded.get(survivor_key)
        for absorbed_id in resolution.absorbed:
            absorbed = loaded.get((store_id, absorbed_id))
            if absorbed is None or absorbed.merged_into is not None:
                continue
            MERGES.inc()
            base = profile or absorbed.model_copy(
                update={"customer_id": resolution.customer_id, "identifiers": ()}
            )
            merged = merge(base, absorbed)
            tombstone = absorbed.model_copy(update={"merged_into": resolution.customer_id})
            loaded[(store_id, absorbed_id)] = tombstone
            changes.profiles[(store_id, absorbed_id)] = tombstone
            changes.merges.append((store_id, absorbed_id, resolution.customer_id))
            decision = after_merge(merged, rules, event.event_id, event.occurred_at)
            changes.record(decision)
            profile = decision.profile
        decision = decide(profile, event, rules, resolution.customer_id, ids)
        loaded[survivor_key] = decision.profile
        changes.record(decision)
        for identifier in (
            decision.profile.identifiers if decision.profile.erased else (*ids, *decision.profile.identifiers)
        ):
            in_store[identifier] = resolution.customer_id
            changes.identities[(store_id, identifier)] = resolution.customer_id

    async def _erase_shop(
        self, conn: AsyncConnection, event: CustomerErasedEvent, changes: Changes, loaded: dict[Key, Profile]
    ) -> None:
        """Shopify's shop/redact: the store uninstalled us; erase every customer's personal data."""
        for stored in await repository.load_store_profiles_for_update(conn, event.store_id):
            profile = loaded.get((stored.store_id, stored.customer_id), stored)
            d = Decision(profile=profile, cause=event.event_id, at=event.occurred_at)
            erase(d)
            d.funnel_events.clear()  # one shop-wide erasure event below, not one per customer
            loaded[(profile.store_id, profile.customer_id)] = d.profile
            changes.record(d)
        erased = Decision(
            profile=Profile(store_id=event.store_id, customer_id=SHOP_WIDE), cause=event.event_id
        )
        erased.at = event.occurred_at
        erase(erased)
        changes.funnel_events.extend(erased.funnel_events)

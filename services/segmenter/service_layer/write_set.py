"""The write set of one batch of events or one round of timers: what the pure decisions changed, collected
while they are made and written in one go at the end of the transaction. The consumer and the timer worker
both use it, so a timer's decision is persisted exactly like an event's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters import repository
from services.segmenter.adapters.writes_in_order import Send, WritesInOrder
from services.segmenter.domain.funnel import Decision
from services.segmenter.domain.profile import OrderFact, Profile, Transition
from shared.funnel_event_structs import FunnelEvent
from shared.funnel_rules import FunnelRules
from shared.metrics import count_each
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreRegistry

TRANSITIONS = Counter("segmenter_transitions_total", "Funnel transitions", ["dimension", "to"])

Key = tuple[str, str]


def first_copies(
    events: Sequence[StorefrontEvent], first_seen: set[tuple[str, str]]
) -> list[StorefrontEvent]:
    """The events to apply: those whose (store, event id) the database saw for the first time, each once
    (a second copy inside the same batch is a duplicate too)."""
    unclaimed = set(first_seen)
    fresh: list[StorefrontEvent] = []
    for event in events:
        key = (event.store_id, event.event_id)
        if key in unclaimed:
            unclaimed.discard(key)
            fresh.append(event)
    return fresh


@dataclass
class Changes:
    """Everything a batch (or a round of timers) changes, written in one go at the end of the transaction."""

    profiles: dict[Key, Profile] = field(default_factory=dict)
    transitions: list[tuple[Profile, Transition]] = field(default_factory=list)
    funnel_events: list[FunnelEvent] = field(default_factory=list)
    timers: dict[tuple[str, str, str], datetime | None] = field(default_factory=dict)
    identities: dict[Key, str] = field(default_factory=dict)
    # Orders whose products count among those bought together: +1 for an order or an edit's new version,
    # -1 for the version an edit replaced.
    bought: list[tuple[str, OrderFact, int]] = field(default_factory=list)
    merges: list[tuple[str, str, str]] = field(default_factory=list)
    # What the database held when the batch began: rows that come out of the batch identical are not
    # written again (most events touch a profile without changing its identities, orders or often anything).
    stored_profiles: dict[Key, Profile] = field(default_factory=dict)
    stored_identities: dict[Key, str] = field(default_factory=dict)
    # The profiles `write` wrote (those that came out of the batch changed).
    written: list[Profile] = field(default_factory=list)
    # An erased customer -> the emails and anonymous ids it no longer holds that this batch named
    # (deciding._forget_look_ups): remembered as forgotten with those its look-ups lose.
    forgotten: dict[Key, set[str]] = field(default_factory=dict)
    # (store, identifier, survivor): an absorbed profile's look-ups that its merge left out (the bound on a
    # profile's emails and anonymous ids, `deciding._drop_look_ups`), deleted after the repointing.
    dropped: set[tuple[str, str, str]] = field(default_factory=set)

    def record(self, decision: Decision) -> None:
        p = decision.profile
        store_id, customer_id = p.store_id, p.customer_id
        key = (store_id, customer_id)
        prior = self.profiles.get(key) or self.stored_profiles.get(key)
        self.profiles[key] = p
        # The look-ups of identifiers the profile held already are stored (or recorded earlier in the batch):
        # only new ones are set, and nearly every event leaves the profile its very tuple. Setting every one
        # for each event cost a customer of many identifiers (many orders, or anonymous ids up to the bound)
        # a key built and set for each, and a row sent for each every batch.
        if prior is None or prior.identifiers is not p.identifiers:
            self._look_ups(store_id, customer_id, p.identifiers, () if prior is None else prior.identifiers)
        # Most decisions make no transition, funnel event or order: nothing to extend then.
        if decision.transitions:
            self.transitions.extend((p, t) for t in decision.transitions)
        if decision.funnel_events:
            self.funnel_events.extend(decision.funnel_events)
        timers = self.timers
        for kind, due in decision.timers.items():
            timers[(store_id, customer_id, kind)] = due
        if decision.new_orders:
            self.bought.extend((store_id, o, 1) for o in decision.new_orders)
        if decision.edited_orders:
            # An edit's products replace what the order counted before among the products bought together.
            for was, now in decision.edited_orders:
                self.bought.extend(((store_id, was, -1), (store_id, now, 1)))

    def _look_ups(self, store_id: str, customer_id: str, held: Sequence[str], before: Sequence[str]) -> None:
        """The look-ups of the identifiers in `held` that were not in `before`, for this customer."""
        known = set(before)
        identities = self.identities
        for identifier in held:
            if identifier not in known:
                identities[(store_id, identifier)] = customer_id

    async def write(self, conn: AsyncConnection) -> int:
        # Profiles are immutable and `decide` returns the very profile it got when nothing changed, so
        # identity tells an untouched profile, and an order or identity carried over unchanged, apart.
        changed = [p for key, p in self.profiles.items() if p is not self.stored_profiles.get(key)]
        self.written = changed
        # The statements go out in this order, each prepared while PostgreSQL runs the one before
        # (adapters/writes_in_order.py): 7.6-9.5 us an event of the client's preparing (rows, documents,
        # funnel events encoded) runs during PostgreSQL's writes instead of before them (in process, over
        # the replay mix, with funnel events as msgspec Structs; 12.8-14.1 us when they were pydantic models).
        async with WritesInOrder(conn) as writes:
            await writes.then(_sent(repository.profiles_write(changed)))
            # Writes that need no other's rows, each to a table of its own, as one statement: up to four
            # round trips fewer, six when the history joins them. Alternated runs against one statement
            # each: at saturation the transaction's p50 335-348 -> 324-327 ms a batch of 3,000; at 1,000
            # events/s the writes' p50 9.6-10.2 -> 8.5-9.2 ms a batch of 30. The rest is PostgreSQL's work.
            rest = [
                repository.identities_write(
                    {k: c for k, c in self.identities.items() if self.stored_identities.get(k) != c}
                ),
                repository.orders_write(self._changed_orders(changed)),
                repository.copurchases_write(self.bought),
                repository.timers_write(self.timers),
                repository.outbox_write(self.funnel_events),
            ]
            # Rows this batch wrote under an absorbed id (before the event that linked it) move too: after
            # them, and the survivor's history, which replaces whatever rows its absorbed profiles brought,
            # after that. Without a merge, the history is one more write that needs no other's rows.
            repoint = repository.repoint_write(self.merges)
            histories = repository.histories_write(self._changed_histories(changed))
            if repoint is None:
                rest.append(histories)
            await writes.then(_sent(repository.together([w for w in rest if w is not None])))
            if repoint is not None:
                await writes.then(_sent(repoint))
                await writes.then(_sent(histories))
                await writes.then(_sent(repository.drop_identities_write(self.dropped, self.merges)))
            # An erased customer can no longer be found by an email or anonymous id from before the erasure,
            # nor by those of profiles merged into them (their look-ups moved with the merge): only by the
            # identifiers the profile holds, which are those an erasure keeps and those said since.
            for key, p in self.profiles.items():
                if p.erased_at is not None:
                    await writes.then(_forgotten(p, self.forgotten.get(key, set())))
        count_each(TRANSITIONS, ((t.dimension, t.to_value) for _, t in self.transitions))
        return len(self.funnel_events)

    def _changed_histories(self, changed: list[Profile]) -> list[Profile]:
        """Profiles whose history (derived from their facts) is not the one stored: a late fact may re-date
        or remove a step as well as add one, so the rows are replaced."""
        out = []
        for p in changed:
            stored = self.stored_profiles.get((p.store_id, p.customer_id))
            if stored is None or stored.transitions != p.transitions or p.merged_into != stored.merged_into:
                out.append(p)
        return out

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


def _sent(write: repository.Write | None) -> Send | None:
    return write.send if write is not None else None


def _forgotten(p: Profile, also: set[str]) -> Send:
    async def forget(conn: AsyncConnection) -> None:
        assert p.erased_at is not None
        await repository.forget_identities(
            conn, p.store_id, p.customer_id, p.erased_at, keep=p.identifiers, also=sorted(also)
        )

    return forget


_DEFAULT_RULES: Final = FunnelRules()


def rules_for(stores: StoreRegistry, store_id: str) -> FunnelRules:
    store = stores.get(store_id)
    return store.funnel if store is not None else _DEFAULT_RULES

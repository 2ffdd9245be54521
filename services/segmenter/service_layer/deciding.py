"""A batch's decisions, event after event, from what was read for it: each event's customer resolved from its
identifiers (merging the profiles they turn out to share), the funnel's rules applied to its profile, and
every decision recorded into the batch's write set. The processor reads and writes; this decides, with
no I/O.

Compiled by mypyc with the rules and the write set (shared/compiled.py): it runs once or more an event, and
its calls into them are native calls there."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from services.segmenter.adapters import repository
from services.segmenter.domain.event_classes import CUSTOMER_ERASED
from services.segmenter.domain.funnel import (
    after_merge,
    decide,
    erase_shop,
    erasure_notices,
    event_identifiers,
    forgotten_in_merge,
    merge,
    tombstone,
)
from services.segmenter.domain.identity import FORGETTABLE, holds, named_alone, resolve
from services.segmenter.domain.profile import Profile
from services.segmenter.service_layer.write_set import Changes, Key, rules_for
from shared.events import SHOP_WIDE
from shared.funnel_rules import FunnelRules
from shared.storefront_event_structs import CustomerErasedEvent, StorefrontEvent
from shared.stores import StoreRegistry

# Events decided between two turns of the event loop, for a batch decided while the batch before is written.
TURN: Final = 100


@dataclass(frozen=True, slots=True)
class Keys:
    """What a batch's look-ups need of its events: each event's identifiers (in the events' order, worked out
    once for the look-ups and for resolution), the (store, identifier) pairs to look up, and the customer
    each event names on its own (resolved with nothing known yet), whose profile is loaded too."""

    ids_of: list[list[str]]
    wanted: set[tuple[str, str]]
    named_alone: set[Key]

    @classmethod
    def of(cls, events: Sequence[StorefrontEvent]) -> Keys:
        ids_of = [event_identifiers(e) for e in events]
        wanted: set[tuple[str, str]] = set()
        named: set[Key] = set()
        # One pass, without a list of (event, ids) pairs or a resolution an event: about 2,000 instructions
        # an event fewer than two comprehensions over the pairs and `resolve(ids, {})` (the replay's mix).
        for e, ids in zip(events, ids_of, strict=True):
            store_id = e.store_id
            for i in ids:
                wanted.add((store_id, i))
            named.add((store_id, named_alone(ids)))
        return cls(ids_of, wanted, named)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a batch read before deciding: the identities its events name, the profiles they resolve to
    (locked) and the transaction, when a row was found."""

    identities: dict[tuple[str, str], str]
    profiles: dict[Key, Profile]
    shops: dict[str, list[Profile]]  # a store's profiles, for each store a shop-wide erasure names
    writer: repository.Writer | None
    # customer -> the ids merged into it before this batch (directly), read only when the batch erases a
    # customer or meets one erased: what an erasure must reach besides the customer itself.
    merged: dict[Key, set[str]]
    # Of the identifiers no look-up knows, those an erasure forgot: whose, and when (`_as_when_said`).
    forgotten: dict[tuple[str, str], repository.Forgotten]
    # The version (xmin) of each profile's row, as read.
    versions: dict[Key, str]

    def known(self) -> dict[str, dict[str, str]]:
        """identifier -> customer, per store: what resolution consults (and updates) event after event."""
        known: dict[str, dict[str, str]] = {}
        for (store, identifier), customer in self.identities.items():
            known.setdefault(store, {})[identifier] = customer
        return known


def deciding(
    events: Sequence[StorefrontEvent],
    keys: Keys,
    loaded: Loaded,
    changes: Changes,
    stores: StoreRegistry,
) -> Iterator[None]:
    """The decisions of a batch into `changes`, event after event, from what was read for it; a pause (a
    yield) after every `TURN` events."""
    known = loaded.known()
    profiles = dict(loaded.profiles)
    forgotten = dict(loaded.forgotten)  # and those this batch's erasures forget, as they go
    ids_of = keys.ids_of
    # Each store's rules as the batch found them, read from the registry once (an interpreted call and a
    # pydantic attribute, about 1,100 instructions an event): a reload of the stores' settings meanwhile
    # reaches the next batch, and one batch's decisions all follow the same rules.
    rules_of: dict[str, FunnelRules] = {}
    for start in range(0, len(events), TURN):
        end = start + TURN
        for event, ids in zip(events[start:end], ids_of[start:end], strict=True):
            # The type inline: a call an event for the rare erasure would cost more than the test.
            if type(event) is CUSTOMER_ERASED and is_shop_wide(event):
                _erase_shop(event, loaded, changes, profiles)
            else:
                store_id = event.store_id
                rules = rules_of.get(store_id)
                if rules is None:
                    rules = rules_of[store_id] = rules_for(stores, store_id)
                _apply_one(rules, event, ids, known, profiles, changes, loaded.merged, forgotten)
        yield


def _apply_one(
    rules: FunnelRules,
    event: StorefrontEvent,
    ids: list[str],
    known: dict[str, dict[str, str]],
    loaded: dict[Key, Profile],
    changes: Changes,
    stored_merges: dict[Key, set[str]],
    forgotten_ids: dict[tuple[str, str], repository.Forgotten],
) -> None:
    store_id = event.store_id
    in_store = known.setdefault(store_id, {})
    # Only after an erasure is anything forgotten: the usual batch resolves by the look-ups alone.
    resolution = resolve(ids, _as_when_said(event, ids, in_store, forgotten_ids, loaded) or in_store)
    survivor_key = (store_id, resolution.customer_id)
    # A refund of an order never seen lands on a profile named after the order ("order:<id>"), durable
    # like any other; the order, when it comes, names that id too and absorbs the waiting refund.
    profile = loaded.get(survivor_key)
    if profile is not None and profile.merged_into is not None:
        # An id merged away whose identities an erasure forgot (nothing else resolves to a tombstone):
        # whoever comes back under it is a new customer, not the erased one nor the tombstone's pointer.
        profile = None
    before = [] if profile is None else [profile]  # the profiles this event's customer is made of
    forgotten: set[str] = set()  # ids whose consumers must forget what they heard under them
    for absorbed_id in resolution.absorbed:
        absorbed_key = (store_id, absorbed_id)
        absorbed = loaded.get(absorbed_key)
        if absorbed is None or absorbed.merged_into is not None:
            continue
        before.append(absorbed)
        base = profile or absorbed.model_copy(
            update={"customer_id": resolution.customer_id, "identifiers": ()}
        )
        merged = merge(base, absorbed)
        if merged.erased_at is None:
            _drop_look_ups(merged, absorbed, in_store, changes)
        if profile is not None:
            # One of the two erased before we heard of the link, and the other gave no details since:
            # what the notifier heard under the other's ids is what that erasure forgot, as if the link
            # had come first (then the erasure would have reached them). `merge` leaves out its identities
            # and what it heard before the erasure; what either did since (by account id alone) stays.
            sides = (survivor_key, absorbed_key)
            for key, gone in zip(sides, forgotten_in_merge(profile, absorbed), strict=True):
                if gone:
                    forgotten |= {key[1], *_merged_into(key, stored_merges, changes.merges)}
        loaded[absorbed_key] = changes.profiles[absorbed_key] = tombstone(absorbed, resolution.customer_id)
        changes.merges.append((store_id, absorbed_id, resolution.customer_id))
        decision = after_merge(merged, rules, event.event_id, event.occurred_at)
        changes.record(decision)
        profile = decision.profile
    customer_id = resolution.customer_id
    decision = decide(profile, event, rules, customer_id, ids)
    after = decision.profile
    loaded[survivor_key] = after
    changes.record(decision)
    if type(event) is CUSTOMER_ERASED:
        # The erasure reaches every id merged into the customer, before this batch or in it.
        forgotten |= _merged_into(survivor_key, stored_merges, changes.merges)
    if forgotten:
        changes.funnel_events.extend(erasure_notices(store_id, forgotten, event.event_id, event.occurred_at))
    # The profile's own identifiers are in the write set already (`record` put each there, for its
    # customer, which is always the resolved one: the profile is loaded under that id, or made or merged
    # into it): only the event's are added to it, unless the customer was ever erased. Then the profile
    # holds only the identifiers said after the erasure (and "id:", "order:" ones), chosen by date in
    # `decide` and `merge`, and the event's may be older: an erased customer who came back with new
    # details (no longer `erased`) must not be found again by an old email or anonymous id.
    held = after.identifiers
    # The look-ups of a profile that kept its very tuple name it already (every one the batch's events name
    # was read, and a merge or a new identifier makes a new tuple): nearly every event, and a customer of many
    # identifiers would set each again.
    if not (len(before) == 1 and before[0].identifiers is held and after.erased_at is None):
        for identifier in held:
            in_store[identifier] = customer_id
    if after.erased_at is None:
        identities = changes.identities
        for identifier in ids:
            # Most of the event's are the profile's own, set in both just now: a look in the tuple of a few
            # costs less than a key built, hashed and set again (about 650 instructions each, callgrind).
            # An email or anonymous id it does not hold is one the bound on them left out (`decide` joins
            # every other the event names): it finds no one.
            if not holds(held, identifier) and not identifier.startswith(FORGETTABLE):
                in_store[identifier] = customer_id
                identities[(store_id, identifier)] = customer_id
    else:
        _forget_look_ups(after, before, ids, in_store, changes, forgotten_ids)


def _drop_look_ups(merged: Profile, absorbed: Profile, in_store: dict[str, str], changes: Changes) -> None:
    """The absorbed profile's emails and anonymous ids that a merge left out (the bound on them,
    `identity.merged_identifiers`) find no one from now on, later in this batch either: their look-ups,
    which the merge's repointing would give the survivor, go (`Changes.dropped`)."""
    held = merged.identifiers
    store_id, survivor = merged.store_id, merged.customer_id
    for identifier in absorbed.identifiers:
        if not holds(held, identifier):
            in_store.pop(identifier, None)
            changes.identities.pop((store_id, identifier), None)
            changes.dropped.add((store_id, identifier, survivor))


def _as_when_said(
    event: StorefrontEvent,
    ids: list[str],
    in_store: dict[str, str],
    forgotten: dict[tuple[str, str], repository.Forgotten],
    loaded: dict[Key, Profile],
) -> Mapping[str, str] | None:
    """The look-ups as they stood when the event was said, if it names an identifier that an erasure at or
    after that time forgot (None otherwise): that identifier then still named the erased customer (as it
    is now: merged into another since, that one). Said before the erasure and heard after it, the event is
    theirs and forgotten as theirs (with whoever else it names, as a link would have merged them then), not
    the start of a new customer holding what the erasure removed, nor part of one who came under that
    identifier since."""
    if not forgotten:
        return None
    store_id = event.store_id
    then: dict[str, str] = {}
    for identifier in ids:
        f = forgotten.get((store_id, identifier))
        if f is None or event.occurred_at > f.erased_at:
            continue
        owner = f.customer_id
        profile = loaded.get((store_id, owner))
        while profile is not None and profile.merged_into is not None:
            owner = profile.merged_into
            profile = loaded.get((store_id, owner))
        if profile is not None:
            then[identifier] = owner
    return ChainMap(then, in_store) if then else None


def _forget_look_ups(
    after: Profile,
    before: list[Profile],
    ids: list[str],
    in_store: dict[str, str],
    changes: Changes,
    forgotten: dict[tuple[str, str], repository.Forgotten],
) -> None:
    """An erased customer's emails and anonymous ids that it no longer holds (its erasure, or a merge, or
    an event from before the erasure left them out) find it no more, later in this batch either, and are
    remembered as forgotten (`repository.forget_identities`) for the late events that name them."""
    assert after.erased_at is not None
    held = set(after.identifiers)
    named = {i for p in before for i in p.identifiers} | set(ids)
    dropped = sorted(i for i in named - held if i.startswith(FORGETTABLE))
    if not dropped:
        return
    store_id, customer_id = after.store_id, after.customer_id
    for identifier in dropped:
        in_store.pop(identifier, None)
        forgotten[(store_id, identifier)] = repository.Forgotten(customer_id, after.erased_at)
    changes.forgotten.setdefault((store_id, customer_id), set()).update(dropped)


def _merged_into(key: Key, stored: dict[Key, set[str]], batch: list[tuple[str, str, str]]) -> set[str]:
    """The ids merged into this customer, directly or through others: before this batch (`stored`,
    survivor -> absorbed ids) or in it so far (the batch's merges, store -> absorbed -> survivor)."""
    store_id = key[0]
    direct = {k: set(v) for k, v in stored.items() if k[0] == store_id}
    for store, absorbed_id, survivor_id in batch:
        if store == store_id:
            direct.setdefault((store, survivor_id), set()).add(absorbed_id)
    found: set[str] = set()
    todo = [key]
    while todo:
        for absorbed_id in direct.get(todo.pop(), ()):
            if absorbed_id not in found:
                found.add(absorbed_id)
                todo.append((store_id, absorbed_id))
    return found


def is_shop_wide(event: CustomerErasedEvent) -> bool:
    """Shopify's shop/redact: the erasure of every customer of the store."""
    return event.customer.store_customer_id == SHOP_WIDE


def _erase_shop(
    event: CustomerErasedEvent, loaded: Loaded, changes: Changes, profiles: dict[Key, Profile]
) -> None:
    """Every customer of the store is erased as it stands at this event: each stored one (not merged away
    before this batch) as this batch left it so far, and each this batch made."""
    current = {(p.store_id, p.customer_id): p for p in loaded.shops[event.store_id]}
    for key, p in profiles.items():
        if key[0] == event.store_id and (key in current or key not in loaded.profiles):
            current[key] = p
    erasure = erase_shop(event.store_id, current.values(), event.event_id, event.occurred_at)
    for decision in erasure.decisions:
        profiles[(decision.profile.store_id, decision.profile.customer_id)] = decision.profile
        changes.record(decision)
    changes.funnel_events.extend(erasure.funnel_events)

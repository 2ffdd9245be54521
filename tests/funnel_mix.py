"""The funnel events the segmenter's domain decides for the benchmark's mix, for tests that hold an encoding
to the contract over realistic events (every kind, every stage a customer passes)."""

from __future__ import annotations

from collections.abc import Iterator

from bench.workload import Storefront, canonical
from services.segmenter.domain.funnel import decide
from services.segmenter.domain.instants import standardise_event
from services.segmenter.domain.profile import Profile
from shared import funnel_event_structs as out
from shared.funnel_rules import FunnelRules


def funnel_events_of_the_mix(seed: int, run: str) -> Iterator[out.FunnelEvent]:
    """Each funnel event decided for 1,500 Segment calls and 500 Shopify webhooks of the mix, in order, every
    customer's profile carried from one of their events to the next as the segmenter carries it."""
    store = Storefront(seed=seed, run=run)
    rules = FunnelRules()
    held: dict[str, Profile] = {}
    for event in canonical([*store.segment_calls(1500), *store.shopify_webhooks(500)]):
        standardise_event(event)
        key = event.customer.key
        decision = decide(held.get(key), event, rules, key)
        held[key] = decision.profile
        yield from decision.funnel_events

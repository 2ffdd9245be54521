"""What the segmenter's domain decides for the benchmark's mix, for tests that hold an encoding to its
contract over realistic values (every event kind, every stage a customer passes)."""

from __future__ import annotations

from collections.abc import Iterator

from bench.workload import Storefront, canonical
from services.segmenter.domain.funnel import Decision, decide
from services.segmenter.domain.instants import standardise_event
from services.segmenter.domain.profile import Profile
from shared import funnel_event_structs as out
from shared.funnel_rules import FunnelRules
from tests.builders import as_segmenter_event


def decisions_of_the_mix(seed: int, run: str) -> Iterator[Decision]:
    """Each decision for 1,500 Segment calls and 500 Shopify webhooks of the mix, in order, every customer's
    profile carried from one of their events to the next as the segmenter carries it."""
    store = Storefront(seed=seed, run=run)
    rules = FunnelRules()
    held: dict[str, Profile] = {}
    for model in canonical([*store.segment_calls(1500), *store.shopify_webhooks(500)]):
        event = standardise_event(as_segmenter_event(model))
        key = event.customer.key
        decision = decide(held.get(key), event, rules, key)
        held[key] = decision.profile
        yield decision


def funnel_events_of_the_mix(seed: int, run: str) -> Iterator[out.FunnelEvent]:
    """The funnel events of those decisions, in order."""
    for decision in decisions_of_the_mix(seed, run):
        yield from decision.funnel_events
